"""The one schedule table: every periodic task herald runs, with its period.

Each period is overridable by its environment variable (see herald.settings). Every entry
carries ``expires``: a sweep that waited in a backed-up queue longer than its period is
dropped rather than run late, since the next tick does the same work. The sweeps themselves
take an advisory lock and skip a second run within half a period (schedules.runs), so two beats
started by mistake still give one run per period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from herald.settings import get_settings


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
        # Old events, attempts, audit rows and plumbing past their retention.
        Entry("purge-retention", "purge", "herald.sweep.purge", settings.purge_interval_s),
    ]


def schedule() -> dict[str, dict[str, Any]]:
    return {e.name: {"task": e.task, "schedule": e.period_s, "options": {"expires": e.period_s}}
            for e in entries()}


beat_schedule = schedule()
