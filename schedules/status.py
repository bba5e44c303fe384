"""What ``herald status`` shows: when each sweep last ran, whether it is overdue, what is raised, dead letters.

A sweep is overdue once twice its period (and at least a minute more) passed since its last success,
or, when beat started after that (or it never succeeded), since beat started: beat runs a sweep one
period after it starts, so right after a start the hourly sweeps have not run and are not yet due.
Beat's start is recorded by schedules.beat (its scheduler) as the ``beat`` row of ``sweep_runs``.

Each worker pool (herald.lanes.POOLS) is ``up`` while a worker consuming its queues has a heartbeat
younger than ``HERALD_HEARTBEAT_TIMEOUT_S`` (herald.heartbeats), ``down`` once every worker it had
stopped or went silent (killed, crashed, hung), and ``not seen`` when no worker ever ran it against this
database (a deployment may leave a pool out, e.g. a channel it does not use; `herald worker --pool all`
covers every pool).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from herald import db, deadletters
from herald.lanes import POOLS
from herald.models import OpsCondition, SweepRun, WorkerHeartbeat, utcnow
from herald.settings import get_settings
from schedules.beat import BEAT_ROW, entries


def overdue_after_s(period_s: float) -> float:
    """A sweep is overdue once twice its period (and at least a minute more) passed without success."""
    return max(2 * period_s, period_s + 60.0)


def sweeps(now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or utcnow()
    with db.session() as s:
        runs = {r.sweep: r for r in s.scalars(select(SweepRun))}
    beat = runs.get(BEAT_ROW)
    beat_started = beat.last_started_at if beat else None
    out = []
    for entry in entries():
        run = runs.get(entry.sweep)
        last_ok = run.last_ok_at if run else None
        since = max((t for t in (last_ok, beat_started) if t is not None), default=None)
        late = since is None or now - since > timedelta(seconds=overdue_after_s(entry.period_s))
        out.append({"sweep": entry.sweep, "task": entry.task, "period_s": entry.period_s,
                    "last_ok_at": last_ok.isoformat() if last_ok else None,
                    "last_outcome": run.last_outcome if run else None,
                    "last_error": run.last_error if run else None,
                    "runs": run.runs if run else 0, "failures": run.failures if run else 0,
                    "overdue": late, "not_yet_due": last_ok is None and not late,
                    "last_summary": run.last_summary if run else {}})
    return out


def beat_started_at() -> str | None:
    with db.session() as s:
        started = s.scalar(select(SweepRun.last_started_at).where(SweepRun.sweep == BEAT_ROW))
    return started.isoformat() if started else None


def open_dead_letters() -> dict[str, int]:
    """Dead letters not replayed, by kind (task, message, delivery)."""
    with db.session() as s:
        return deadletters.open_counts(s)


def raised_conditions() -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.scalars(select(OpsCondition).where(OpsCondition.raised.is_(True))
                         .order_by(OpsCondition.condition, OpsCondition.resource))
        return [{"condition": r.condition, "resource": r.resource, "value": r.value, "threshold": r.threshold,
                 "raised_at": r.raised_at.isoformat() if r.raised_at else None} for r in rows]


def pools(now: datetime | None = None) -> list[dict[str, Any]]:
    """Every pool with its live workers: ``up``, ``down`` (had workers, none live now) or ``not seen``."""
    now = now or utcnow()
    live_after = now - timedelta(seconds=get_settings().heartbeat_timeout_s)
    with db.session() as s:
        beats = list(s.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.node)))
    out = []
    for name, pool in POOLS.items():
        mine = [b for b in beats if set(pool.queues) <= set(b.queues)]
        live = [b for b in mine if b.stopped_at is None and b.last_seen >= live_after]
        last = max(mine, key=lambda b: b.last_seen, default=None)
        state = "up" if live else "down" if mine else "not seen"
        out.append({"pool": name, "queues": list(pool.queues), "state": state,
                    "workers": [{"node": b.node, "pid": b.pid, "hostname": b.hostname,
                                 "started_at": b.started_at.isoformat(), "last_seen": b.last_seen.isoformat()}
                                for b in live],
                    "last_seen": last.last_seen.isoformat() if last else None,
                    # why a down pool is down: its last worker stopped (warm shutdown) or went silent
                    "last_worker": None if last is None or live else "stopped" if last.stopped_at else "silent"})
    return out
