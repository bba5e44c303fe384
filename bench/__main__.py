"""``python -m bench``: herald against its naive baseline and the bare ceiling, on the fakes at 50 ms.

    python -m bench --quick          # about 2 minutes: 1,000 deliveries per scenario
    python -m bench                  # full: 10,000 per scenario (the mixed one is the 10k fan-out)
    python -m bench --profile        # also record py-spy profiles of the deliver pools
    python -m bench --scenarios page-during-burst   # pages during a 100,000-device fan-out (bench/pages.py)
    python -m bench --scenarios libraries --n 2000  # the providers' libraries against herald's senders

Needs Postgres and Redis on 127.0.0.1 (as the tests do): the database ``herald_bench`` is dropped
and created, Redis keys under ``herald_bench:`` are used. Exit code 0, or 1 if a delivery was lost.

``libraries`` (bench/libraries.py) sends the same --n messages per channel through firebase-admin's
``send_each_async``, pywebpush's ``webpush_async`` and aioapns, and through herald's own sender for
each channel (its provider's ``send_one``), each in its own process, --library-concurrency in
flight (default 100): CPU seconds per 1,000, deliveries/s, and how many the fake accepted (the run
exits 1 unless it is all of them). It measures the dependencies, not herald's pipeline, so it is
not in the default set; run on its own it needs neither Postgres nor Redis, nor herald's workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import libraries, pages, report, stack
from bench.procs import Group
from devtools.fakes.registry import FAKES
from herald import channels

# Every registered channel that has a fake to send to (devtools/fakes/registry.py).
# A channel only routes that name it reach (e-mail, the fallback) is not a fan-out channel: left out.
CHANNELS: tuple[str, ...] = tuple(name for name in channels.names() if name in FAKES
                                  and not channels.get(name).named_only)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def figures(latencies: list[float], seconds: float, cpu_s: float, n: int) -> dict[str, Any]:
    return {"n": n, "seconds": round(seconds, 2), "per_s": round(n / seconds, 1) if seconds else 0.0,
            "p50_ms": round(percentile(latencies, 0.5) * 1000), "p95_ms": round(percentile(latencies, 0.95) * 1000),
            "p99_ms": round(percentile(latencies, 0.99) * 1000),
            "cpu_s_per_1000": round(cpu_s / n * 1000, 3) if n else 0.0}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="herald-bench-"))
        # herald's scenarios run on the real services; the libraries scenario alone needs only the fakes
        self.pipeline = bool(args.scenarios - {"libraries"})
        self.env = stack.fresh_services(self.folder / "data") if self.pipeline else {}
        os.environ.update(self.env)  # before herald reads its settings
        self.fakes = Group("fakes")
        self.herald = Group("herald")
        self.naive = Group("naive")
        self.control = ""
        self.fakes_env: dict[str, str] = {}
        self.herald_env: dict[str, str] = {}
        self.channels = CHANNELS

    # --- setup -------------------------------------------------------------------------

    def setup(self) -> None:
        from sqlalchemy import text

        from herald import db, directory, migrate

        migrate.upgrade()
        with db.session() as s:
            s.execute(text("CREATE TABLE bench_naive (run text, device_id bigint, status int, "
                              "sent_at double precision)"))
            paging = pages.directory()
            spec = directory.DirectorySpec.model_validate({
                "people": [{"id": "bench-admin", "name": "bench admin"}, *paging["people"]],
                "teams": paging["teams"],
                "routes": [{"id": "bench", "match": {"types": ["business.*"]}, "recipients": [{"subscribers": True}],
                            "ids_only": True}, *paging["routes"]]})
            directory.apply(spec, s)
        self.fakes_env, self.control = stack.start_fakes(self.fakes, self.folder / "fakes",
                                                         self.args.latency_ms)
        env = {**os.environ, **self.fakes_env}
        os.environ.update(self.fakes_env)
        from herald.settings import get_settings

        get_settings.cache_clear()
        self.herald_env = env
        stack.start_herald(self.herald, env, self.folder, self.args.deliver_concurrency, self.args.deliver_kind)
        stack.start_naive(self.naive, env, self.folder)
        pages.seed_pagers(self)

    def restart_herald(self, extra: dict[str, str]) -> None:
        """herald's pools stopped and started again with ``extra`` in their environment."""
        self.herald.stop()
        self.herald = Group("herald")
        stack.start_herald(self.herald, {**self.herald_env, **extra}, self.folder, self.args.deliver_concurrency,
                           self.args.deliver_kind)

    def device_token(self, channel: str, name: str) -> str:
        """A token the fakes accept: a Web Push subscription they issue, a made-up token elsewhere."""
        if channel != "webpush":
            return f"bench-{name}-{channel}"
        return json.dumps(self.subscriptions(1)[0], sort_keys=True)

    def subscriptions(self, count: int) -> list[dict[str, Any]]:
        from herald.channels import vapid

        key = vapid.b64url(vapid.public_bytes(vapid.load(Path(self.fakes_env["HERALD_WEBPUSH_VAPID_KEY_FILE"]))))
        path = f"/webpush/subscriptions?count={count}&key={key}"
        answer: list[dict[str, Any]] = stack.control(self.control, path, {})
        return answer

    def seed(self, name: str, n: int, channels: tuple[str, ...]) -> list[int]:
        """n people subscribed to ``bench.<name>``, one device each, round-robin over channels."""
        from sqlalchemy import insert, select

        from herald import db
        from herald.models import Device, Person, Subscription

        webpush_n = sum(1 for i in range(n) if channels[i % len(channels)] == "webpush")
        subs = self.subscriptions(webpush_n) if webpush_n else []
        people, devices = [], []
        for i in range(n):
            channel = channels[i % len(channels)]
            pid = f"{name}-{i}"
            people.append({"id": pid, "name": pid, "timezone": "UTC", "opted_out_channels": [], "active": True})
            if channel == "webpush":
                token, kind = json.dumps(subs.pop(), sort_keys=True), "subscription"
            else:
                token, kind = f"bench-{name}-{channel}-{i:06d}", "token"
            devices.append({"person_id": pid, "channel": channel, "token": token, "token_kind": kind,
                            "app": "com.example.bench", "environment": "production", "active": True})
        step = 20_000  # one statement per chunk: a 100,000-row insert is a big message for the driver
        with db.session() as s:
            for start in range(0, n, step):
                s.execute(insert(Person), people[start:start + step])
                s.execute(insert(Device), devices[start:start + step])
                s.execute(insert(Subscription), [{"person_id": p["id"], "topic": f"bench.{name}"}
                                                 for p in people[start:start + step]])
            ids = list(s.scalars(select(Device.id).where(Device.person_id.like(f"{name}-%")).order_by(Device.id)))
        return ids

    # --- herald --------------------------------------------------------------------------

    def wait_herald(self, event_id: Any, n: int, timeout_s: float) -> dict[str, int]:
        from sqlalchemy import func, select

        from herald import db
        from herald.models import TERMINAL_DELIVERY, Delivery

        deadline = time.monotonic() + timeout_s
        statuses: dict[str, int] = {}
        while time.monotonic() < deadline:
            with db.session() as s:
                statuses = {k: v for k, v in s.execute(select(Delivery.status, func.count())
                                                       .where(Delivery.event_id == event_id)
                                                       .group_by(Delivery.status)).all()}
            if sum(statuses.values()) >= n and all(k in TERMINAL_DELIVERY for k in statuses):
                return statuses
            time.sleep(0.1)
        raise TimeoutError(f"herald did not finish {n} deliveries in {timeout_s:.0f} s: {statuses}")

    def run_herald(self, name: str, n: int) -> tuple[dict[str, Any], Any]:
        from sqlalchemy import func, select

        from herald import db
        from herald.models import Delivery, DeliveryAttempt
        from producers import business_event, publish

        fakes0, cpu0, by0 = self.fakes.cpu_s(), self.herald.cpu_s(), self.herald.cpu_s_by_label()
        t0 = time.time()
        event_id = publish(business_event("order_submitted", topic=f"bench.{name}", reference=f"PO-{name}",
                                          environment="prod", summary=f"Order for {name}"))
        statuses = self.wait_herald(event_id, n, timeout_s=max(120.0, n / 20))
        cpu, fakes_cpu = self.herald.cpu_s() - cpu0, self.fakes.cpu_s() - fakes0
        by_pool = {label: round((value - by0.get(label, 0.0)) / n * 1000, 3)
                   for label, value in self.herald.cpu_s_by_label().items()}
        with db.session() as s:
            sent = [at.timestamp() - t0 for (at,) in s.execute(
                select(Delivery.sent_at).where(Delivery.event_id == event_id, Delivery.status == "sent"))
                if at is not None]
            attempts = s.scalar(select(func.count()).select_from(DeliveryAttempt).join(Delivery)
                                .where(Delivery.event_id == event_id)) or 0
        seconds = max(sent) if sent else float("nan")
        result = figures(sent, seconds, cpu, n)
        result.update(statuses=statuses, attempts=attempts, fakes_cpu_s_per_1000=round(fakes_cpu / n * 1000, 3),
                      cpu_s_per_1000_by_pool=by_pool)
        return result, event_id

    # --- references ------------------------------------------------------------------------

    def run_ceiling(self, name: str, device_ids: list[int]) -> dict[str, Any]:
        from sqlalchemy import select

        from herald import db
        from herald.models import Device

        with db.session() as s:
            items = [{"channel": d.channel, "token": d.token, "kind": d.token_kind, "app": d.app,
                      "environment": d.environment}
                     for d in s.scalars(select(Device).where(Device.id.in_(device_ids)))]
        path, out = self.folder / f"ceiling-{name}.json", self.folder / f"ceiling-{name}.out.json"
        path.write_text(json.dumps(items))
        fakes0 = self.fakes.cpu_s()
        subprocess.run([sys.executable, "-m", "bench.ceiling", str(path), str(out), "--concurrency",
                        str(self.args.concurrency)], check=True, env={**os.environ, "PYTHONPATH": str(stack.ROOT)})
        fakes_cpu = self.fakes.cpu_s() - fakes0
        answer = json.loads(out.read_text())
        # the same latency definition as herald's: from the start of the run to the answer
        result = figures(answer["latencies_s"], answer["seconds"], answer["cpu_s"], answer["n"])
        result.update(statuses=answer["statuses"], fakes_cpu_s_per_1000=round(fakes_cpu / len(items) * 1000, 3))
        return result

    def run_naive(self, name: str, device_ids: list[int], event_id: Any) -> dict[str, Any]:
        from sqlalchemy import text

        from bench.naive import deliver
        from herald import db

        run = f"{name}-{time.time_ns()}"
        fakes0, cpu0 = self.fakes.cpu_s(), self.naive.cpu_s()
        t0 = time.time()
        for device_id in device_ids:
            deliver.apply_async(args=[run, device_id, str(event_id)])
        deadline = time.monotonic() + max(120.0, len(device_ids) / 5)
        rows: Sequence[Any] = []
        while time.monotonic() < deadline:
            with db.session() as s:
                rows = s.execute(text("SELECT status, sent_at FROM bench_naive WHERE run = :r"), {"r": run}).all()
            if len(rows) >= len(device_ids):
                break
            time.sleep(0.2)
        cpu, fakes_cpu = self.naive.cpu_s() - cpu0, self.fakes.cpu_s() - fakes0
        latencies = [r.sent_at - t0 for r in rows]
        result = figures(latencies, max(latencies) if latencies else float("nan"), cpu, len(rows))
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        result.update(statuses=statuses, fakes_cpu_s_per_1000=round(fakes_cpu / max(1, len(rows)) * 1000, 3))
        return result

    # --- the run -------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Connections, provider tokens and imports in every pool before anything is timed."""
        ids = self.seed("warmup", 60, CHANNELS)
        _, event_id = self.run_herald("warmup", 60)
        self.run_naive("warmup", ids[:6], event_id)

    def profile(self, name: str) -> subprocess.Popen[bytes] | None:
        if not self.args.profile:
            return None
        pids = [str(p.pid) for label, p in self.herald.procs.items() if label.startswith("deliver.")]
        return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses",
                                 "--format", "raw", "--rate", "200", "-o", str(self.folder / f"profile-{name}.txt"),
                                 "--pid", pids[CHANNELS.index(name)] if name in CHANNELS else pids[0]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run_libraries(self) -> dict[str, Any]:
        """The libraries scenario, after everything else (herald's pools idle), on the same fakes."""
        if not self.control:  # run alone: the fakes only
            self.fakes_env, self.control = stack.start_fakes(self.fakes, self.folder / "fakes",
                                                             self.args.latency_ms)
        return libraries.run(self.fakes_env, self.control, self.folder, self.args.n,
                             self.args.library_concurrency, self.args.latency_ms, self.fakes)

    def main(self) -> int:
        scenarios: list[tuple[str, tuple[str, ...]]] = [(c, (c,)) for c in CHANNELS] + [("mixed", CHANNELS)]
        scenarios = [s for s in scenarios if s[0] in self.args.scenarios]
        results: dict[str, dict[str, Any]] = {}
        started = time.monotonic()
        rss: dict[str, float] = {}
        paging = libs = None
        try:
            if self.pipeline:
                self.setup()
                self.warm_up()
            for name, channels in scenarios:
                ids = self.seed(name, self.args.n, channels)
                spy = self.profile(name)
                herald_result, event_id = self.run_herald(name, self.args.n)
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(60)
                    herald_result["profile"] = report.top_of_profile(self.folder / f"profile-{name}.txt")
                ceiling = self.run_ceiling(name, ids)
                naive = self.run_naive(name, ids[:self.args.naive_n], event_id)
                results[name] = {"herald": herald_result, "ceiling": ceiling, "naive": naive}
                print(report.line(name, results[name]), file=sys.stderr, flush=True)
            rss = self.herald.peak_rss_mb()
            paging = pages.run(self) if "page-during-burst" in self.args.scenarios else None
            if "libraries" in self.args.scenarios:
                libs = self.run_libraries()
        finally:
            for group in (self.naive, self.herald, self.fakes):
                group.stop()
        record = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": report.git_commit(),
                  "mode": "quick" if self.args.quick else "full", "n": self.args.n, "naive_n": self.args.naive_n,
                  "latency_ms": self.args.latency_ms, "cores": os.cpu_count(), "results": results,
                  "peak_rss_mb": rss, "pages": paging, "libraries": libs,
                  "wall_s": round(time.monotonic() - started)}
        (self.folder / "results.json").write_text(json.dumps(record, indent=2))
        print(report.markdown(record))
        if self.args.write:
            report.append(Path(__file__).parent / "RESULTS.md", record)
        print(f"raw figures: {self.folder / 'results.json'}", file=sys.stderr)
        lost = [n for n, r in results.items() if r["herald"]["statuses"].get("sent", 0) < r["herald"]["n"]]
        if libs is not None:
            lost += [f"libraries: {side}" for side in libraries.failed(libs)]
        if lost:
            print(f"not all delivered: {', '.join(lost)}", file=sys.stderr)
        return 1 if lost else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 deliveries per scenario (about 2 minutes)")
    parser.add_argument("--n", type=int, help="deliveries per scenario (default 10,000; quick 1,000)")
    parser.add_argument("--naive-n", type=int, help="deliveries of the naive baseline per scenario "
                                                    "(default 400; quick 100): it is slow, its rate is what counts")
    parser.add_argument("--scenarios", help="comma-separated subset of fcm,apns,webpush,mixed,page-during-burst,"
                                            "libraries (default: all but libraries; quick: all but "
                                            "page-during-burst and libraries)")
    parser.add_argument("--burst-n", type=int, help="page-during-burst: devices of the burst (default 100,000)")
    parser.add_argument("--pages", type=int, default=20, help="page-during-burst: pages idle and in the burst")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="latency of the fakes")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="the ceiling's requests in flight (herald's HERALD_<P>_MAX_IN_FLIGHT default)")
    parser.add_argument("--library-concurrency", type=int, default=libraries.DEFAULT_CONCURRENCY,
                        help="libraries: messages in flight, the same for a library and herald's sender")
    parser.add_argument("--deliver-concurrency", type=int, default=2, help="processes (or threads) per deliver pool")
    parser.add_argument("--deliver-kind", default="prefork", choices=("prefork", "threads"),
                        help="Celery pool kind of the deliver pools")
    parser.add_argument("--profile", action="store_true", help="py-spy the deliver pools during each scenario")
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    args.n = args.n or (1000 if args.quick else 10_000)
    args.naive_n = args.naive_n or (100 if args.quick else 400)
    default = "fcm,apns,webpush,mixed" if args.quick else "fcm,apns,webpush,mixed,page-during-burst"
    args.scenarios = {s.strip() for s in (args.scenarios or default).split(",")}
    args.burst_n = args.burst_n or 100_000
    return args


if __name__ == "__main__":
    sys.exit(Bench(parse()).main())
