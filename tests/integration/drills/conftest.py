"""Fault drills: the whole stack as separate processes, one fault at a time (issue 8; README "Fault drills").

Each drill starts what it breaks on its own: a ``redis-server`` on a free port (the broker, restartable) or,
for a module that overrides ``drill_broker`` (test_rabbitmq.py), a virtual host of its own on the shared
RabbitMQ behind a TCP proxy of its own (its cut and restore: a broker restart), and a TCP proxy in front of the
session's Postgres database (cut = the database is gone, restore = back).
Around them: one ``herald worker --pool NAME`` per pool (the sweeps pool runs beat), the provider fakes on a
thread of the test process (FCM, APNs and Web Push at 20 ms), and a directory whose subscribers have devices
on the three channels. A burst is published from a subprocess in direct mode; the drill then asserts the
promise: every accepted event stored, every target sent, every extra copy a provider saw covered by a
recorded resend, and every pool process still alive.

Run them alone with ``pytest -m drill`` (``-s`` shows each drill's figures as it ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml
from sqlalchemy import func, select

from herald.lanes import POOLS
from tests.integration.conftest import DATA_DIR, DB_NAME, ROOT, stop_warmly, track_log, wait_until

DRILL_POOLS = tuple(POOLS)  # every pool, each its own process, as in production (a new pool joins the drills)
PEOPLE_PER_CHANNEL = 4  # 12 targets per event: a burst of 30 events is 360 targets
OK_STATUS = {"fcm": 200, "apns": 200, "webpush": 201}

# Fast sweeps and short timeouts, so that a drill's fault and its recovery fit in seconds.
DRILL_ENV = {
    "HERALD_BATCH_SIZE": "5",
    "HERALD_STALL_DEADLINE_S": "6",
    "HERALD_RECOVER_INTERVAL_S": "2",
    "HERALD_OUTBOX_RELAY_INTERVAL_S": "2",
    "HERALD_OUTBOX_GRACE_S": "2",
    "HERALD_BACKLOG_INTERVAL_S": "2",
    "HERALD_BACKLOG_CLEAR_AFTER_S": "4",
    "HERALD_DUE_TICK_INTERVAL_S": "2",
    "HERALD_RETRY_BASE_S": "0.5",
    "HERALD_RETRY_MAX_S": "4",
    "HERALD_CHANNEL_TIMEOUT_S": "3",
    "HERALD_CHANNEL_CIRCUIT_OPEN_S": "1",
    "HERALD_CHANNEL_CIRCUIT_MAX_OPEN_S": "4",
    "HERALD_PUBLISH_MAX_RETRIES": "5",
    "HERALD_PUBLISH_TIMEOUT_S": "5",
    "HERALD_WEBPUSH_ALLOW_LOOPBACK": "true",
    "HERALD_HEARTBEAT_INTERVAL_S": "1",
    "HERALD_HEARTBEAT_TIMEOUT_S": "4",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "drill_env(**settings): extra HERALD_* settings for the drill's stack")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what a drill breaks: its own Redis, and a proxy in front of Postgres ----------------------------


class DrillRedis:
    """A ``redis-server`` of the drill's own, without persistence (as on this machine): restartable."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, timeout_s=20, message=f"drill redis on {self.port}")

    def ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, down_s: float = 1.0) -> None:
        """Killed (it forgets every queue: no persistence), then started again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


class DrillRabbit:
    """A virtual host of the drill's own on the shared RabbitMQ (127.0.0.1:5672), created at start and deleted
    at stop, reached through a TCP proxy of its own. The shared broker itself is never stopped: its restart, as
    herald's processes see it, is the proxy's (:meth:`restart`)."""

    def __init__(self, tag: str) -> None:
        self.vhost = f"herald_drill_{tag}"
        self.proxy = TcpProxy(("127.0.0.1", 5672))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.proxy.port}/{self.vhost}"

    def start(self) -> None:
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.proxy.start()

    def restart(self, down_s: float = 3.0) -> None:
        """What a RabbitMQ restart is to herald's processes: every connection dropped, new ones refused for
        ``down_s``, then accepted again. Durable queues keep their messages, and a message delivered and not
        yet acknowledged goes back to its queue, as across a real restart."""
        self.proxy.cut()
        time.sleep(down_s)
        self.proxy.restore()

    def stop(self) -> None:
        self.proxy.cut()
        with contextlib.suppress(subprocess.CalledProcessError):  # never created, or already gone
            rabbitmqctl("delete_vhost", self.vhost)

    def depth(self, queue: str) -> int:
        listing = rabbitmqctl("list_queues", "-p", self.vhost, "name", "messages_ready")
        rows = (line.split("\t") for line in listing.strip().splitlines() if "\t" in line)
        return next((int(n) for name, n in rows if name == queue and n.isdigit()), 0)


Broker = DrillRedis | DrillRabbit


class TcpProxy:
    """A TCP proxy between herald's processes and a service (Postgres, RabbitMQ): ``cut()`` is the service gone,
    ``restore()`` back."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stop: threading.Event | None = None

    def url(self) -> str:
        """The session's Postgres database through this proxy (a proxy in front of Postgres)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self._stop = stop = threading.Event()
        threading.Thread(target=self._accept, args=(listener, stop), daemon=True, name=f"proxy-{self.port}").start()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        with listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                try:
                    server = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                client.settimeout(None)
                server.settimeout(None)
                with self._lock:
                    self._sockets |= {client, server}
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def cut(self) -> None:
        """Refuse new connections and drop every open one, as a stopped database does."""
        if self._stop:
            self._stop.set()
        time.sleep(0.2)  # the listener closes within one accept timeout
        with self._lock:
            open_now = list(self._sockets)
        for s in open_now:
            self._close(s)

    def restore(self) -> None:
        self.start()


# --- the stack ------------------------------------------------------------------------------------


class Stack:
    """One worker process per pool, the sweeps pool with beat, on the drill's broker and database."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, list[Path]] = {}
        self.killed: list[tuple[str, int]] = []  # (pool, pid) killed on purpose by the drill
        self.last_status: dict[str, Any] = {}

    def start(self, pool: str, *, wait: bool = True) -> subprocess.Popen[bytes]:
        path = self.folder / f"worker-{pool}-{len(self.logs.get(pool, []))}.log"
        self.logs.setdefault(pool, []).append(track_log(path))
        argv = [sys.executable, "-m", "cli", "worker", "--pool", pool, "--concurrency", "1", "--loglevel", "INFO"]
        if pool == "sweeps":
            argv.append("--beat")
        with open(path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[pool] = proc
        if wait:
            self.wait_ready(pool)
        return proc

    def start_all(self, pools: tuple[str, ...] = DRILL_POOLS) -> None:
        for pool in pools:
            self.start(pool, wait=False)
        for pool in pools:
            self.wait_ready(pool)

    def wait_ready(self, pool: str, timeout_s: float = 60) -> None:
        path = self.logs[pool][-1]
        proc = self.procs[pool]

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"pool {pool} exited with {proc.returncode}:\n{path.read_text()[-3000:]}")
            return path.exists() and " ready." in path.read_text(errors="replace")

        wait_until(ready, timeout_s=timeout_s, message=f"pool {pool} ready")

    def kill(self, pool: str, sig: int = signal.SIGKILL) -> None:
        """SIGKILL the pool's main process and its children (the whole group), as the OOM killer might."""
        proc = self.procs[pool]
        self.killed.append((pool, proc.pid))
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop_pool(self, pool: str) -> None:
        """A warm stop, as an operator's ``kill`` or a deployment does: SIGTERM to the main process."""
        proc = self.procs[pool]
        self.killed.append((pool, proc.pid))
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def dead(self) -> dict[str, int | None]:
        """Pools whose current process is gone (each with its exit code): none may die of a fault."""
        return {pool: proc.returncode for pool, proc in self.procs.items() if proc.poll() is not None}

    def status(self) -> tuple[int, dict[str, Any]]:
        """``herald status --json`` as an operator runs it: (exit code, what it printed)."""
        done = subprocess.run([sys.executable, "-m", "cli", "status", "--json"], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)
        try:
            body = json.loads(done.stdout)
        except ValueError:
            body = {"unparsed": done.stdout, "stderr": done.stderr[-2000:]}
        return done.returncode, body

    def pool_state(self, pool: str) -> str | None:
        """The pool's state in ``herald status --json`` (up, down, not seen), None when status has no pools."""
        _, body = self.status()
        self.last_status = body
        return next((p.get("state") for p in body.get("pools", []) if p.get("pool") == pool), None)

    def wait_pool_state(self, pool: str, state: str, timeout_s: float = 20) -> float:
        """Seconds until ``herald status --json`` shows the pool in that state (what it showed, if never)."""
        start = time.monotonic()
        try:
            wait_until(lambda: self.pool_state(pool) == state, timeout_s=timeout_s, interval_s=1,
                       message=f"herald status --json showing pool {pool} {state}")
        except AssertionError as exc:
            pools = [p for p in self.last_status.get("pools", [self.last_status]) if p.get("pool") in (pool, None)]
            raise AssertionError(f"{exc}: {json.dumps(pools, default=str)[:3000]}") from None
        return time.monotonic() - start

    def queue_depth(self, broker: Broker, queue: str) -> int:
        """Messages waiting in one queue of the drill's broker (on Redis, kombu's list under the key prefix)."""
        if isinstance(broker, DrillRabbit):
            return broker.depth(queue)
        prefix = self.env.get("HERALD_BROKER_KEY_PREFIX", "")
        return cast(int, broker.client().llen(f"{prefix}{queue}"))

    def stop(self) -> None:
        stop_warmly(self.procs.values(), grace_s=20)

    def track_logs(self) -> None:
        """Put every log of this stack under the suite's guard for the current test (a shared stack)."""
        for paths in self.logs.values():
            for path in paths:
                track_log(path)


# --- the directory and the burst ------------------------------------------------------------------


@dataclass
class Directory:
    """Subscribers of a topic of their own, one device each on FCM, APNs or Web Push, keyed as the fakes see them."""

    tag: str
    topic: str
    keys: dict[str, str] = field(default_factory=dict)  # the fakes' key of a device (token, subscription id) -> channel


def load_directory(fakes: Any, tag: str, *, ops_devices: bool = True) -> Directory:
    from herald import db, directory

    d = Directory(tag, topic=f"orders.{tag}")  # a topic of its own: a shared stack's earlier people are not in it
    people: list[dict[str, Any]] = []
    for i in range(PEOPLE_PER_CHANNEL):
        fcm = f"fcm-{tag}-{i}"
        apns = uuid.uuid4().hex + uuid.uuid4().hex  # APNs device tokens are 64 hex digits
        sub = fakes.webpush.subscribe()
        d.keys[fcm] = "fcm"
        d.keys[apns] = "apns"
        d.keys[fakes.webpush.endpoint_token(sub)] = "webpush"
        people += [
            {"id": f"f{i}-{tag}", "name": f"F{i}", "subscriptions": [d.topic],
             "devices": [{"channel": "fcm", "token": fcm}]},
            {"id": f"a{i}-{tag}", "name": f"A{i}", "subscriptions": [d.topic],
             "devices": [{"channel": "apns", "token": apns, "app": "com.example.portal"}]},
            {"id": f"w{i}-{tag}", "name": f"W{i}", "subscriptions": [d.topic],
             "devices": [{"channel": "webpush", "subscription": sub}]},
        ]
    ops_token = f"fcm-{tag}-ops"
    people.append({"id": f"ops-{tag}", "name": "Ops", "devices": [{"channel": "fcm", "token": ops_token}] if ops_devices
                   else []})
    spec = {
        "people": people,
        "teams": [{"id": "operations", "members": [f"ops-{tag}"]}],
        "routes": [
            {"id": "orders", "match": {"types": ["business.*"]}, "recipients": [{"subscribers": True}]},
            {"id": "operations", "match": {"types": ["ops.*"]}, "recipients": [{"team": "operations"}]},
        ],
    }
    path = DATA_DIR / f"drill-directory-{tag}.yaml"
    path.write_text(yaml.safe_dump(spec))
    from devtools.fakes.testing import herald_env

    with herald_env({"HERALD_WEBPUSH_ALLOW_LOOPBACK": "true"}), db.session() as s:
        directory.apply(directory.load(path), s)
    return d


@dataclass
class Burst:
    """Events published by one producer subprocess in direct mode: those it was told were accepted."""

    proc: subprocess.Popen[str]
    out: Path
    started: float

    def accepted(self) -> list[uuid.UUID]:
        return [uuid.UUID(line.split()[1]) for line in self._lines() if line.startswith("accepted ")]

    def refused(self) -> list[str]:
        return [line for line in self._lines() if line.startswith("refused ")]

    def _lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def wait(self, timeout_s: float = 120) -> list[uuid.UUID]:
        self.proc.wait(timeout=timeout_s)
        assert self.proc.returncode == 0, self.proc.stderr.read() if self.proc.stderr else self.proc.returncode
        return self.accepted()


PUBLISHER = """
import sys, time
from producers import business_event, publish
from herald.errors import BrokerUnavailable
count, pace_s, tag, out, topic = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
with open(out, "a") as f:
    for i in range(count):
        event = business_event("order_submitted", topic=topic, reference=f"{tag}-{i}", environment="prod",
                               summary=f"Order {tag}-{i}", idempotency_key=f"{tag}-{i}")
        try:
            publish(event)
        except BrokerUnavailable as exc:
            f.write(f"refused {event.id} {exc}\\n")
        else:
            f.write(f"accepted {event.id}\\n")
        f.flush()
        time.sleep(pace_s)
"""


def publish_burst(stack: Stack, topic: str, tag: str, count: int = 30, pace_s: float = 0.05) -> Burst:
    """Publish ``count`` business events from a subprocess (direct mode), recording each accepted id."""
    out = stack.folder / f"burst-{tag}.txt"
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(count), str(pace_s), tag, str(out), topic], cwd=ROOT,
                            env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return Burst(proc, out, time.monotonic())


# --- the promise ------------------------------------------------------------------------------------


@dataclass
class Figures:
    drill: str
    accepted: int = 0
    lost: int = 0
    not_terminal: int = 0
    targets: int = 0
    duplicates: int = 0
    recorded_resends: int = 0
    unexplained_duplicates: int = 0
    drain_s: float = 0.0
    dead_pools: dict[str, int | None] = field(default_factory=dict)

    def line(self) -> str:
        return (f"{self.drill}: accepted {self.accepted}, lost {self.lost}, not terminal {self.not_terminal}, "
                f"targets {self.targets}, duplicates {self.duplicates} (recorded resends {self.recorded_resends}, "
                f"unexplained {self.unexplained_duplicates}), drained in {self.drain_s:.1f}s"
                + (f", dead pools {self.dead_pools}" if self.dead_pools else ""))


FIGURES: list[Figures] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fault drills: events lost, duplicates, time to drain")
        for f in FIGURES:
            terminalreporter.write_line(f.line())


def fake_key(channel: str, token: str) -> str:
    """How the fakes name a device: its token, or a Web Push subscription's id (the endpoint's last segment)."""
    if channel == "webpush":
        return str(json.loads(token)["endpoint"]).rsplit("/", 1)[-1]
    return token


def _figures(drill: str, accepted: list[uuid.UUID], d: Directory, fakes: Any, stack: Stack,
             drain_s: float) -> Figures:
    from herald import db
    from herald.models import TERMINAL_DELIVERY, Delivery, DeliveryAttempt, Device, EventRow

    f = Figures(drill, accepted=len(accepted), drain_s=drain_s, dead_pools=stack.dead())
    with db.session() as s:
        stored = set(s.scalars(select(EventRow.id).where(EventRow.id.in_(accepted))))
        f.lost = len(set(accepted) - stored)
        targets = s.execute(select(Delivery.id, Delivery.status, Device.channel, Device.token)
                            .join(Device, Device.id == Delivery.device_id)
                            .where(Delivery.event_id.in_(accepted))).all()
        resends = Counter(fake_key(channel, token) for channel, token in s.execute(
            select(Device.channel, Device.token).join(Delivery, Delivery.device_id == Device.id)
            .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
            .where(DeliveryAttempt.resend.is_(True), Delivery.event_id.in_(accepted))))
    f.targets = len(targets)
    f.not_terminal = sum(1 for t in targets if t.status not in TERMINAL_DELIVERY or t.status != "sent")
    sent_per_key = Counter(fake_key(t.channel, t.token) for t in targets if t.status == "sent")
    seen = fakes.call(lambda: {name: [dict(x) for x in p.seen] for name, p in fakes.providers.items()})
    for key, channel in d.keys.items():  # the operations person's device is not among them: not the burst's
        got = sum(1 for x in seen.get(channel, []) if x.get("token") == key and x.get("status") == OK_STATUS[channel])
        extra = max(0, got - sent_per_key.get(key, 0))
        f.duplicates += extra
        f.recorded_resends += min(extra, resends.get(key, 0))
        f.unexplained_duplicates += max(0, extra - resends.get(key, 0))
    return f


def assert_promise(drill: str, accepted: list[uuid.UUID], d: Directory, fakes: Any, stack: Stack,
                   since: float, timeout_s: float = 120) -> Figures:
    """Every accepted event stored and every target sent, extra copies only as recorded resends, no pool died."""
    from tests.integration.helpers import all_done

    assert accepted, "the producer was not told that any event was accepted"
    with contextlib.suppress(AssertionError):  # the figures below say what is missing
        wait_until(lambda: all_done(accepted) or stack.dead(), timeout_s=timeout_s, interval_s=0.5,
                   message="every accepted event stored and every target terminal")
    f = _figures(drill, accepted, d, fakes, stack, time.monotonic() - since)
    FIGURES.append(f)
    print(f"\n[drill] {f.line()}")
    assert not f.dead_pools, f"pool processes died: {f.dead_pools} ({f.line()})\n{_dead_pool_logs(stack)}"
    assert f.lost == 0, f"accepted events never stored: {f.line()}"
    assert f.not_terminal == 0, f"targets not sent: {f.line()}"
    assert f.unexplained_duplicates == 0, f"copies a provider saw that no resend explains: {f.line()}"
    return f


def _dead_pool_logs(stack: Stack) -> str:
    return "\n".join(f"--- {pool}:\n{stack.logs[pool][-1].read_text(errors='replace')[-2500:]}"
                     for pool in stack.dead())


def events_of_type(prefix: str) -> list[Any]:
    from herald import db
    from herald.models import EventRow

    with db.session() as s:
        return list(s.execute(select(EventRow.id, EventRow.type, EventRow.status)
                              .where(EventRow.type.like(f"{prefix}%"))).all())


def sent_count(event_ids: list[Any]) -> int:
    from herald import db
    from herald.models import Delivery

    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Delivery)
                            .where(Delivery.event_id.in_(event_ids), Delivery.status == "sent")) or 0)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def drill_fakes() -> Iterator[Any]:
    from devtools.fakes.testing import running_fakes

    with running_fakes(latency_ms=20) as fakes:
        yield fakes


@pytest.fixture(scope="module")
def drill_broker() -> str:
    """The broker a module's drills run on: ``redis`` (a ``redis-server`` of the drill's own) or ``rabbitmq``
    (a vhost of its own on the shared RabbitMQ). A module overrides this fixture to choose."""
    return "redis"


@dataclass
class Drill:
    """What one drill works with: its stack, broker, database proxy, fakes and directory."""

    stack: Stack
    broker: Broker
    db_proxy: TcpProxy
    fakes: Any
    directory: Directory
    tag: str

    def burst(self, count: int = 30, pace_s: float = 0.05) -> Burst:
        return publish_burst(self.stack, self.directory.topic, f"{self.tag}-{uuid.uuid4().hex[:4]}", count, pace_s)

    def promise(self, drill: str, accepted: list[uuid.UUID], since: float, timeout_s: float = 120) -> Figures:
        return assert_promise(drill, accepted, self.directory, self.fakes, self.stack, since, timeout_s)


def _new_drill(fakes: Any, folder: Path, pools: tuple[str, ...], extra_env: dict[str, str],
               broker_kind: str = "redis") -> Drill:
    from tests.integration.conftest import TEST_ENV

    tag = uuid.uuid4().hex[:6]
    broker: Broker = DrillRabbit(tag) if broker_kind == "rabbitmq" else DrillRedis(folder)
    broker.start()
    proxy = TcpProxy()
    proxy.start()
    env = {**os.environ, **TEST_ENV, **fakes.env(), **DRILL_ENV,
           "HERALD_BROKER_URL": broker.url, "HERALD_BROKER_KEY_PREFIX": f"drill-{tag}:",
           "HERALD_DATABASE_URL": proxy.url(), "HERALD_DATA_DIR": str(folder),
           "HERALD_DEV_OUTPUT": str(folder / "dev-channel.jsonl"), **extra_env}
    stack = Stack(env, folder)
    try:
        fakes.call(fakes.reset)
        directory = load_directory(fakes, tag)
        stack.start_all(pools)
    except BaseException:  # no stack, vhost or redis-server left behind by a drill that never started
        stack.stop()
        broker.stop()
        proxy.cut()
        raise
    return Drill(stack, broker, proxy, fakes, directory, tag)


def _stop(drill: Drill) -> None:
    drill.stack.stop()
    drill.broker.stop()
    drill.db_proxy.cut()
    drill.fakes.call(drill.fakes.reset)


def _folder(name: str) -> Path:
    name = "".join(c if c.isalnum() else "-" for c in name)[-60:]
    return Path(tempfile.mkdtemp(prefix=f"drill-{name}-", dir=DATA_DIR))


@pytest.fixture
def drill(drill_fakes: Any, drill_broker: str, clean: None, request: pytest.FixtureRequest) -> Iterator[Drill]:
    """A whole stack of the test's own (``@pytest.mark.drill_env(KEY=value)`` adds settings)."""
    extra = {k: str(v) for m in request.node.iter_markers("drill_env") for k, v in m.kwargs.items()}
    d = _new_drill(drill_fakes, _folder(request.node.name), DRILL_POOLS, extra, drill_broker)
    try:
        yield d
    finally:
        _stop(d)


@pytest.fixture(scope="module")
def _module_drill(drill_fakes: Any, drill_broker: str, request: pytest.FixtureRequest) -> Iterator[Drill]:
    d = _new_drill(drill_fakes, _folder(request.module.__name__), DRILL_POOLS, {}, drill_broker)
    try:
        yield d
    finally:
        _stop(d)


@pytest.fixture
def shared_drill(_module_drill: Drill, request: pytest.FixtureRequest) -> Iterator[Drill]:
    """One stack for every test of a module (the kill drills: each restarts what it killed), with a fresh
    directory and fakes per test, and the stack's logs under the suite's guard from this test's start only.

    Tables are not emptied under running workers (TRUNCATE would deadlock with them): each drill asserts on
    its own events, and the dead letters it leaves are checked here as the suite's guard does for ``clean``.
    """
    from datetime import UTC, datetime, timedelta

    from tests.integration.conftest import _patterns, _unexpected_dead_letters

    d = _module_drill
    for pool, code in d.stack.dead().items():  # an earlier drill failed before its restart
        print(f"\n[drill] restarting pool {pool} (exited {code}) left dead by an earlier drill")
        d.stack.start(pool)
    for paths in d.stack.logs.values():
        for path in paths:
            if path.exists():
                with open(path, "ab") as log, open(path.with_suffix(".earlier.log"), "ab") as keep:
                    keep.write(path.read_bytes())
                    log.truncate(0)
    d.stack.track_logs()
    d.fakes.call(d.fakes.reset)
    d.directory = load_directory(d.fakes, d.tag + uuid.uuid4().hex[:4])
    since = datetime.now(UTC) - timedelta(seconds=1)
    yield d
    unexpected = _unexpected_dead_letters(since, _patterns(request.node, "expect_dead_letters"))
    assert not unexpected, f"unexpected dead letters: {unexpected[:10]}"
