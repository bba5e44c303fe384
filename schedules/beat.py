"""The one schedule table: every periodic task herald runs, with its period, and the scheduler beat runs it with.

Each period is overridable by its environment variable (see herald.settings). Every entry
carries ``expires``: a sweep that waited in a backed-up queue longer than its period is
dropped rather than run late, since the next tick does the same work. The sweeps themselves
take an advisory lock and skip a second run within half a period (schedules.runs), so two beats
started by mistake still give one run per period.

Only beat loads this module: celeryconfig names :class:`Scheduler` by string (``beat_scheduler``), so
``herald beat``, ``herald worker --beat`` and ``celery -A herald.app beat`` read the table here, while a
producer's ``publish()`` or a worker without beat never imports the schedules package. The scheduler
also records beat's start in ``sweep_runs`` (row ``beat``), so that ``herald status`` knows which
sweeps are not yet due.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from celery.beat import PersistentScheduler

from herald.settings import get_settings

log = logging.getLogger(__name__)

BEAT_ROW = "beat"  # its row in sweep_runs: last_started_at is when beat last started


@dataclass(frozen=True)
class Entry:
    name: str  # the beat entry
    sweep: str  # its row in sweep_runs (``herald status``)
    task: str
    period_s: float


def entries() -> list[Entry]:
    settings = get_settings()
    return [
        # Postgres is the source of truth: re-enqueue work whose rows stalled past their deadline.
        Entry("recover-stalled-work", "recover", "herald.sweep.recover", settings.recover_interval_s),
        # Events written to the outbox whose relay did not happen (broker down, process died).
        Entry("relay-outbox", "outbox", "herald.sweep.outbox", settings.outbox_relay_interval_s),
        # Certificates, tokens and keys nearing expiry: one notification per threshold per version.
        Entry("sweep-credentials", "credentials", "herald.sweep.credentials", settings.credential_sweep_interval_s),
        # Queue depth and age, time to delivery per flow: raise and clear operations conditions.
        Entry("scan-backlog", "backlog", "herald.sweep.backlog", settings.backlog_interval_s),
        # Timed work (escalation steps...) due now, claimed with SKIP LOCKED.
        Entry("tick-due-work", "due", "herald.sweep.due", settings.due_tick_interval_s),
        # The escalation auditor: an open incident's chain step overdue (its timed work lost or not run) runs now.
        Entry("audit-escalations", "escalations", "herald.sweep.escalations", settings.escalation_audit_interval_s),
        # Approvals past their expiry, undecided: closed (fail closed), written back, the requester told.
        Entry("close-expired-approvals", "approvals", "herald.sweep.approvals", settings.due_tick_interval_s),
        # Old events, attempts, audit rows and plumbing past their retention.
        Entry("purge-retention", "purge", "herald.sweep.purge", settings.purge_interval_s),
        # Write-back webhooks due (retries, or a kick lost): delivered by the writeback pool.
        Entry("deliver-webhooks", "writeback", "herald.sweep.writeback", settings.webhook_tick_interval_s),
    ]


def schedule() -> dict[str, dict[str, Any]]:
    """The table in Celery's ``beat_schedule`` form."""
    return {e.name: {"task": e.task, "schedule": e.period_s, "options": {"expires": e.period_s}}
            for e in entries()}


class Scheduler(PersistentScheduler):
    """Celery's persistent scheduler (the ``-s`` file keeps each entry's last run), given herald's table."""

    def setup_schedule(self) -> None:
        # Before the persistent scheduler merges the configured table into its file, as it would a
        # beat_schedule set in celeryconfig.
        self.app.conf.beat_schedule = schedule()
        super().setup_schedule()
        record_beat_start()


# --- beat's start ---------------------------------------------------------------------------------


def record_beat_start(**_: Any) -> None:
    """Remember when beat started: until a sweep's first period has passed, it is not yet due.

    Beat runs an interval entry one period after it starts, so an hourly sweep has not run in the first
    hour, and ``herald status`` must not call it overdue (schedules.status).
    """
    from herald import db
    from herald.models import utcnow
    from schedules.runs import record_run

    try:
        with db.session() as s:
            record_run(s, BEAT_ROW, started_at=utcnow(), outcome="ok", summary={"pid": os.getpid()})
    except Exception:  # beat must start even when the database is not there yet (logged with its traceback)
        log.warning("could not record beat's start (herald status may call new sweeps overdue)", exc_info=True)
