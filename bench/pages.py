"""The ``page-during-burst`` scenario: how long a page waits while a business event fans out.

A page (``flow.failed``, severity error) goes to three people on call, one device each (FCM, APNs, Web Push).
Its latency is the time from ``publish`` to the last of its three deliveries recorded sent. Measured, in one
run and on one stack:

- on an idle system, ``pages`` pages one after the other;
- during a burst: one business event fanned out to ``burst_n`` subscribed devices, and, from 2 s into it,
  ``pages`` pages, one every :data:`PAGE_GAP_S` (all of them inside the burst on any machine that sends fewer than
  ~4,000 deliveries a second: the report counts those that were);

both with the urgent lane (herald/lanes.py) and without it (``HERALD_URGENT_LANE=false``: pages ride the bulk
queues, as before the lane existed), the pools restarted between the two. The burst's own throughput is
reported for both, so the lane's cost to bulk work shows too.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.__main__ import Bench

PAGERS = ("bench-oncall-fcm", "bench-oncall-apns", "bench-oncall-webpush")
TEAM = "bench-oncall"
# Pages during a burst come this far apart. It was the burst's expected length over the page count, from a rate
# assumed for 2 cores: on a faster day a third of the pages came after the burst and flattered its p99.
PAGE_GAP_S = 1.0


def directory() -> dict[str, Any]:
    """The part of the bench's directory the pages need: the on-call team, and a route of its own."""
    return {"people": [{"id": p, "name": p} for p in PAGERS],
            "teams": [{"id": TEAM, "name": "bench on call", "members": list(PAGERS)}],
            "routes": [{"id": "bench-pages", "match": {"types": ["flow.*"]}, "recipients": [{"team": TEAM}]}]}


def seed_pagers(bench: Bench) -> None:
    """One device per pager, on the channel its name says (a Web Push subscription from the fake)."""
    from sqlalchemy import insert

    from herald import db
    from herald.models import Device

    devices = []
    for person in PAGERS:
        channel = person.rsplit("-", 1)[1]
        token, kind = bench.device_token(channel, person), "token"
        if channel == "webpush":
            kind = "subscription"
        devices.append({"person_id": person, "channel": channel, "token": token, "token_kind": kind,
                        "app": "com.example.bench", "environment": "production", "active": True})
    with db.session() as s:
        s.execute(insert(Device), devices)


def _sent_at(event_ids: list[Any]) -> dict[Any, tuple[int, float | None]]:
    """Per event: its deliveries, and the time the last one was recorded sent (None until all are)."""
    from sqlalchemy import func, select

    from herald import db
    from herald.models import Delivery

    with db.session() as s:
        rows = s.execute(select(Delivery.event_id, func.count(), func.count(Delivery.sent_at),
                                func.max(Delivery.sent_at))
                         .where(Delivery.event_id.in_(event_ids)).group_by(Delivery.event_id)).all()
    done = {r[0]: r[3] if r[1] == r[2] == len(PAGERS) else None for r in rows}
    return {r[0]: (r[1], at.timestamp() if (at := done[r[0]]) is not None else None) for r in rows}


def publish_page(label: str) -> tuple[Any, float]:
    from producers import flow_failed, publish

    flow = f"bench-{label}-{uuid.uuid4().hex[:8]}"  # a flow of its own: every page opens its own incident
    at = time.time()
    return publish(flow_failed(flow, error="bench page", environment="prod")), at


def wait_pages(pages: list[tuple[Any, float]], timeout_s: float) -> list[float]:
    deadline = time.monotonic() + timeout_s
    while True:
        sent = _sent_at([event_id for event_id, _ in pages])
        if all(sent.get(e, (0, None))[1] is not None for e, _ in pages):
            return [sent[e][1] - at for e, at in pages]  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"pages not all sent in {timeout_s:.0f} s: {sent}")
        time.sleep(0.02)


def idle(count: int) -> list[float]:
    """Pages one after the other on a system with nothing else to do."""
    latencies = []
    for i in range(count):
        latencies += wait_pages([publish_page(f"idle{i}")], timeout_s=60)
    return latencies


def fan_out(topic: str, summary: str) -> Any:
    """Publish one business event to every subscriber of ``topic``; returns its id."""
    from producers import business_event, publish

    return publish(business_event("order_submitted", topic=topic, reference=f"PO-{uuid.uuid4().hex[:8]}",
                                  environment="prod", summary=summary))


def burst(bench: Bench, count: int, n: int, topic: str) -> dict[str, Any]:
    """One business event to ``n`` devices; ``count`` pages from 2 s into it, :data:`PAGE_GAP_S` apart."""
    t0 = time.time()
    event_id = fan_out(topic, "Order for the burst")
    pages: list[tuple[Any, float]] = []
    gap = PAGE_GAP_S
    start = t0 + 2.0
    for i in range(count):
        time.sleep(max(0.0, start + i * gap - time.time()))
        pages.append(publish_page(f"burst{i}"))
    burst_done = bench.wait_herald(event_id, n, timeout_s=max(300.0, n / 20))
    latencies = wait_pages(pages, timeout_s=120)
    from sqlalchemy import func, select

    from herald import db
    from herald.models import Delivery

    with db.session() as s:
        last = s.scalar(select(func.max(Delivery.sent_at)).where(Delivery.event_id == event_id))
    seconds = last.timestamp() - t0 if last else float("nan")
    during = sum(1 for (_, at), lat in zip(pages, latencies, strict=True) if at + lat <= t0 + seconds)
    return {"burst": {"n": n, "seconds": round(seconds, 2), "per_s": round(n / seconds, 1), "statuses": burst_done},
            "pages": summary(latencies), "pages_sent_before_burst_ended": during}


def warm_up(bench: Bench, n: int, topic: str) -> float:
    """One untimed burst to the same audience before anything is measured; returns its seconds.

    Without it the first burst measured ran ~11% slower than the second, whichever mode ran first (three runs:
    lane first 89% and 89% of the no-lane rate, no-lane first 113%): the database's first pass over rows just
    seeded. Vacuuming and analyzing every table instead made the first burst slower still (63%).
    """
    started = time.monotonic()
    event_id = fan_out(topic, "Order to warm up")
    bench.wait_herald(event_id, n, timeout_s=max(300.0, n / 20))
    return round(time.monotonic() - started, 1)


def summary(latencies: list[float]) -> dict[str, Any]:
    from bench.__main__ import percentile

    return {"n": len(latencies), "p50_ms": round(percentile(latencies, 0.5) * 1000),
            "p99_ms": round(percentile(latencies, 0.99) * 1000), "max_ms": round(max(latencies) * 1000)}


def run(bench: Bench) -> dict[str, Any]:
    """The whole scenario: both modes, each idle then during a burst. Returns the figures."""
    from herald.settings import get_settings

    n, count = bench.args.burst_n, bench.args.pages
    seed_started = time.monotonic()
    bench.seed("burst", n, bench.channels)
    seeded_s = time.monotonic() - seed_started
    result: dict[str, Any] = {"burst_n": n, "pages": count, "seed_s": round(seeded_s, 1),
                              "warm_up_s": warm_up(bench, n, "bench.burst")}
    for mode, lane in (("lane", "true"), ("no_lane", "false")):
        os.environ["HERALD_URGENT_LANE"] = lane  # this process publishes: its router reads the setting
        get_settings.cache_clear()
        bench.restart_herald({"HERALD_URGENT_LANE": lane})
        wait_pages([publish_page(f"warm-{mode}")], timeout_s=60)  # every pool warm before anything is timed
        quiet = idle(count)
        loaded = burst(bench, count, n, "bench.burst")
        result[mode] = {"idle": summary(quiet), **loaded}
    os.environ.pop("HERALD_URGENT_LANE", None)
    get_settings.cache_clear()
    lane, base = result["lane"], result["no_lane"]
    result["page_p99_burst_over_idle"] = round(lane["pages"]["p99_ms"] / max(1, lane["idle"]["p99_ms"]), 2)
    result["burst_rate_lane_over_no_lane"] = round(lane["burst"]["per_s"] / base["burst"]["per_s"], 3)
    return result


def markdown(r: dict[str, Any]) -> list[str]:
    rows = ["", f"page-during-burst: {r['pages']} pages (flow.failed, error, to 3 people on FCM, APNs and Web Push) "
            f"idle, then from 2 s into one business event fanned out to {r['burst_n']:,} devices; page latency = "
            "publish to the last of its 3 deliveries recorded sent.", "",
            "| lane | page p50 ms idle | page p99 ms idle | page p50 ms in burst | page p99 ms in burst "
            "| page max ms in burst | pages sent inside the burst | burst deliveries/s | burst s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, label in (("lane", "urgent lane"), ("no_lane", "no lane (pages on the bulk queues)")):
        m = r[mode]
        rows.append(f"| {label} | {m['idle']['p50_ms']:,} | {m['idle']['p99_ms']:,} | {m['pages']['p50_ms']:,} "
                    f"| {m['pages']['p99_ms']:,} | {m['pages']['max_ms']:,} "
                    f"| {m['pages_sent_before_burst_ended']} of {m['pages']['n']} | {m['burst']['per_s']:,} "
                    f"| {m['burst']['seconds']} |")
    rows += ["", f"With the lane, page p99 in the burst / idle: {r['page_p99_burst_over_idle']}x (target at most 2x); "
             f"burst throughput with / without the lane: {r['burst_rate_lane_over_no_lane']:.0%} "
             "(target at least 90%)."]
    return rows
