"""Test fixtures: real Postgres and Redis, real worker processes.

Each test session gets its own Postgres database and its own Redis key prefix, so several
sessions (and developers) can share one machine's services. The environment is set in
``pytest_configure``, before herald reads its settings.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

PG_ADMIN = os.environ.get("HERALD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HERALD_TEST_REDIS", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]
SESSION = f"t{os.getpid()}_{uuid.uuid4().hex[:6]}"
DB_NAME = f"herald_{SESSION}"
DATA_DIR = Path(tempfile.mkdtemp(prefix=f"herald-{SESSION}-"))

TEST_ENV = {
    "HERALD_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}",
    "HERALD_BROKER_URL": REDIS_URL,
    "HERALD_BROKER_KEY_PREFIX": f"{SESSION}:",
    "HERALD_DATA_DIR": str(DATA_DIR),
    "HERALD_DEV_OUTPUT": str(DATA_DIR / "dev-channel.jsonl"),
    "HERALD_RETRY_BASE_S": "0.5",
    "HERALD_RETRY_MAX_S": "5",
    "HERALD_STALL_DEADLINE_S": "6",
    "HERALD_RECOVER_INTERVAL_S": "2",
    "HERALD_OUTBOX_RELAY_INTERVAL_S": "2",
    "HERALD_OUTBOX_GRACE_S": "2",
    "HERALD_PUBLISH_MAX_RETRIES": "1",
    "HERALD_PUBLISH_TIMEOUT_S": "2",
    # a database server: herald mints action tokens only with configured keys (herald/actions.py)
    "HERALD_ACTION_KEYS": "test:" + "t" * 40,
}


_CONFIGURED: list[pytest.Config] = []  # the session this module set up (the browser tier may call the hook first)


def pytest_configure(config: pytest.Config) -> None:
    if config in _CONFIGURED:  # `pytest tests`: tests/browser/conftest.py ran it before this conftest was registered
        return
    _CONFIGURED.append(config)
    config.addinivalue_line("markers", "expect_dead_letters(*patterns): the test leaves dead letters on purpose; "
                            "each one's reason must match one of the regular expressions")
    config.addinivalue_line("markers", "expect_log_errors(*patterns): the workers the test started log errors on "
                            "purpose; each ERROR/CRITICAL entry or traceback must match one of the expressions")
    config.addinivalue_line("markers", "drill: a fault drill of the whole stack "
                            "(tests/integration/drills/): pytest -m drill")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    os.environ.update(TEST_ENV)
    from herald import migrate

    migrate.upgrade()


def pytest_unconfigure(config: pytest.Config) -> None:
    from herald import db

    db.reset_engine()
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    except psycopg.Error:
        pass
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(f"{SESSION}:*"):
        r.delete(key)
    if not os.environ.get("HERALD_TEST_KEEP_LOGS"):
        shutil.rmtree(DATA_DIR, ignore_errors=True)


TABLES = ("delivery_attempts", "deliveries", "notifications", "approval_votes", "approvals", "events",
          "incidents", "outbox", "dead_letters", "audit_log", "devices", "subscriptions", "team_members",
          "rotations", "routes", "resources", "teams", "people")


def clear_broker() -> None:
    """Empty the session's queues; keep kombu's exchange bindings (publishers cache them as declared)."""
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(f"{SESSION}:*"):
        if b"_kombu.binding." not in key:
            r.delete(key)


@pytest.fixture
def clean() -> Iterator[None]:
    """Empty herald's tables and the session's Redis keys before a test."""
    from sqlalchemy import text

    from herald import db

    with db.session() as s:
        existing = {r[0] for r in s.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'"))}
        names = [t for t in TABLES if t in existing] + sorted(
            t for t in existing if t not in TABLES and t != "alembic_version")
        s.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
    clear_broker()
    out = Path(TEST_ENV["HERALD_DEV_OUTPUT"])
    out.unlink(missing_ok=True)
    yield


# --- the suite-wide guard: no unexpected dead letter, no unexpected error in a worker's log -----------

_WORKER_LOGS: list[Path] = []
# A log entry starts with Celery's "[date time: LEVEL/process]" prefix; what follows (a traceback) belongs to it.
_ENTRY_START = re.compile(r"^\[\d{4}-\d\d-\d\d ")
_ERROR_ENTRY = re.compile(r"^\[[^\]]*: (ERROR|CRITICAL)/|Traceback \(most recent call last\)", re.MULTILINE)


def track_log(path: Path) -> Path:
    """Have the guard read this log of a process the test started itself (Workers.start does it)."""
    _WORKER_LOGS.append(path)
    return path


def log_errors(path: Path) -> list[str]:
    """The ERROR/CRITICAL entries and tracebacks in one worker log, each with its continuation lines."""
    if not path.exists():
        return []
    entries: list[list[str]] = []
    for line in path.read_text(errors="replace").splitlines():
        if _ENTRY_START.match(line) or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    return [text for text in ("\n".join(e) for e in entries) if _ERROR_ENTRY.search(text)]


def _patterns(item: pytest.Item, name: str) -> list[re.Pattern[str]]:
    return [re.compile(p) for m in item.iter_markers(name) for p in m.args]


def _unexpected_dead_letters(since: Any, allowed: list[re.Pattern[str]]) -> list[str]:
    from sqlalchemy import select

    from herald import db
    from herald.models import DeadLetter

    with db.session() as s:
        found = s.execute(select(DeadLetter.kind, DeadLetter.task_name, DeadLetter.reason)
                          .where(DeadLetter.created_at >= since)).all()
    return [f"{kind} {task or ''}: {reason}" for kind, task, reason in found
            if not any(p.search(reason) for p in allowed)]


@pytest.fixture(autouse=True)
def no_unexpected_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a dead letter or an error in its workers' logs it did not declare.

    Declare what a test causes on purpose with ``@pytest.mark.expect_dead_letters(regex, ...)`` and
    ``@pytest.mark.expect_log_errors(regex, ...)``: each dead letter's reason, and each error entry of a
    worker log, must match one of them.
    """
    from datetime import UTC, datetime, timedelta

    since = datetime.now(UTC) - timedelta(seconds=1)
    _WORKER_LOGS.clear()
    yield
    problems = []
    uses_db = "clean" in request.fixturenames or "workers" in request.fixturenames
    if uses_db:
        problems += [f"dead letter: {d}" for d in
                     _unexpected_dead_letters(since, _patterns(request.node, "expect_dead_letters"))]
    allowed = _patterns(request.node, "expect_log_errors")
    for path in _WORKER_LOGS:
        problems += [f"{path.name}: {e}" for e in log_errors(path) if not any(p.search(e) for p in allowed)]
    _WORKER_LOGS.clear()
    if problems:
        shown = "\n".join(p[:2000] for p in problems[:10])
        pytest.fail(f"{len(problems)} unexpected dead letter(s) or worker log error(s):\n{shown}", pytrace=False)


class Workers:
    """Start and stop real `herald worker` processes for a test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, pool: str = "all", *, env: dict[str, str] | None = None, concurrency: int = 2,
              kind: str = "prefork", beat: bool = False) -> subprocess.Popen[bytes]:
        path = track_log(DATA_DIR / f"worker-{pool}-{uuid.uuid4().hex[:8]}.log")
        log = open(path, "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", "cli", "worker", "--pool", pool, "--concurrency", str(concurrency),
                "--kind", kind, "--loglevel", "INFO"]
        if beat:
            argv.append("--beat")
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        stop_warmly(self.procs)


def stop_warmly(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 30.0) -> None:
    """A warm shutdown, as an operator's `kill` does: SIGTERM to each main process only, which lets its pool
    processes finish their tasks (SIGTERM to the whole group would kill them mid-task). Whatever is left
    after the grace period is killed, group and all."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def workers(clean: None) -> Iterator[Workers]:
    w = Workers()
    yield w
    w.stop_all()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.2,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message} (last: {value!r})")
        time.sleep(interval_s)


@pytest.fixture(scope="module")
def fakes() -> Iterator[Any]:
    """Local FCM, APNs and Web Push fakes (devtools/fakes), shared by one test module."""
    from devtools.fakes.testing import running_fakes

    with running_fakes() as fakes:
        yield fakes


def fresh_fakes(fakes: Any) -> None:
    """A clean slate for the next test: the fakes' switches and what they saw, and no circuit left open."""
    fakes.call(fakes.reset)
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(f"{SESSION}:herald:gate:*"):
        r.delete(key)
    fakes.settle()


SAMPLE_DIRECTORY = ROOT / "devtools" / "samples" / "directory.yaml"


@pytest.fixture
def sample_directory(clean: None) -> None:
    from herald import db, directory

    with db.session() as s:
        directory.apply(directory.load(SAMPLE_DIRECTORY), s)
