"""Exactly once: every sweep runs inside one transaction holding its own advisory lock.

Two beats started by mistake, or a sweep task that waited in a backed-up queue, must not act
twice. Three guards stack up:

1. beat sends every entry with ``expires`` (schedules.beat): a run that waited longer than its
   period is dropped by the worker, since the next tick does the same work;
2. the sweep takes ``pg_try_advisory_xact_lock`` inside its transaction: a second copy running at
   the same moment skips at once, and the lock goes away with the transaction (no stale lock
   after a crash). On SQLite, the embedded default, a process-level lock stands in for it;
3. under the lock, a beat-sent run skips if the same sweep already finished within half its
   period (``min_gap_s``): two beats each sending one run per period give one run per period.

What the sweep notifies goes through the outbox in that same transaction, next to its ledger
rows: either both commit or neither does.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from herald import db
from herald.models import SweepRun, utcnow

log = logging.getLogger(__name__)

Summary = dict[str, Any]

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


def lock_key(sweep: str) -> int:
    """A stable signed 64-bit key per sweep name (pg advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(f"herald.sweep:{sweep}".encode()).digest()[:8], "big", signed=True)


def try_lock(s: Session, sweep: str) -> bool:
    """Take the sweep's advisory lock for the rest of this transaction, or return False at once."""
    return bool(s.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": lock_key(sweep)}))


def _local_lock(sweep: str) -> threading.Lock:
    with _local_guard:
        return _local_locks.setdefault(sweep, threading.Lock())


def record_run(s: Session, sweep: str, *, started_at: datetime, outcome: str, summary: Summary | None = None,
               error: str | None = None) -> None:
    """Upsert the sweep's row in ``sweep_runs`` (safe with concurrent runs of the same sweep)."""
    now = utcnow()
    insert = pg_insert if db.is_postgres() else sqlite_insert
    ok = outcome == "ok"
    values = dict(sweep=sweep, last_started_at=started_at, last_finished_at=now, last_ok_at=now if ok else None,
                  last_outcome=outcome, last_error=error, last_summary=summary or {}, runs=1,
                  failures=0 if ok else 1)
    stmt = insert(SweepRun).values(**values)
    changes: dict[str, Any] = dict(last_started_at=stmt.excluded.last_started_at,
                                   last_finished_at=stmt.excluded.last_finished_at,
                                   last_outcome=stmt.excluded.last_outcome, last_error=stmt.excluded.last_error,
                                   last_summary=stmt.excluded.last_summary, runs=SweepRun.runs + 1,
                                   failures=SweepRun.failures + (0 if ok else 1))
    if ok:
        changes["last_ok_at"] = stmt.excluded.last_ok_at
    s.execute(stmt.on_conflict_do_update(index_elements=["sweep"], set_=changes))


def ran_within(s: Session, sweep: str, gap_s: float) -> bool:
    last = s.scalar(select(SweepRun.last_ok_at).where(SweepRun.sweep == sweep))
    return last is not None and utcnow() - last < timedelta(seconds=gap_s)


def run_exclusive(sweep: str, work: Callable[[Session], Summary], *, min_gap_s: float = 0.0) -> Summary | None:
    """Run ``work`` once, in one transaction under the sweep's lock; None when another copy has it.

    ``min_gap_s`` > 0 (beat-sent runs) also skips when the sweep already succeeded that recently.
    A failure is recorded in ``sweep_runs`` (in its own transaction, the sweep's rolled back) and re-raised.
    """
    started = utcnow()
    local = None if db.is_postgres() else _local_lock(sweep)
    if local is not None and not local.acquire(blocking=False):
        log.info("sweep %s already running in this process: skipped", sweep)
        return None
    try:
        with db.session() as s:
            if local is None and not try_lock(s, sweep):
                log.info("sweep %s already running elsewhere: skipped", sweep)
                return None
            if min_gap_s > 0 and ran_within(s, sweep, min_gap_s):
                log.info("sweep %s ran less than %.0fs ago: skipped", sweep, min_gap_s)
                return None
            summary = work(s)
            record_run(s, sweep, started_at=started, outcome="ok", summary=summary)
        return summary
    except Exception as exc:
        with db.session() as s:
            record_run(s, sweep, started_at=started, outcome="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        if local is not None:
            local.release()


def run_recorded(sweep: str, work: Callable[[], Summary]) -> Summary:
    """For sweeps built to run concurrently (the due-work tick): no lock, the run is recorded after."""
    started = utcnow()
    try:
        summary = work()
    except Exception as exc:
        with db.session() as s:
            record_run(s, sweep, started_at=started, outcome="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    with db.session() as s:
        record_run(s, sweep, started_at=started, outcome="ok", summary=summary)
    return summary
