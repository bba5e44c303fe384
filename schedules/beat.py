"""The one schedule table: every periodic task herald runs, with its period.

Each period is overridable by its environment variable (see herald.settings). Every entry
carries ``expires``: a sweep that waited in a backed-up queue longer than its period is
dropped rather than run late, since the next tick does the same work.
"""

from __future__ import annotations

from typing import Any

from herald.settings import get_settings


def schedule() -> dict[str, dict[str, Any]]:
    settings = get_settings()
    entries = {
        # Postgres is the source of truth: re-enqueue work whose rows stalled past their deadline.
        "recover-stalled-work": ("herald.sweep.recover", settings.recover_interval_s),
        # Events written to the outbox whose relay did not happen (broker down, process died).
        "relay-outbox": ("herald.sweep.outbox", settings.outbox_relay_interval_s),
    }
    return {name: {"task": task, "schedule": period, "options": {"expires": period}}
            for name, (task, period) in entries.items()}


beat_schedule = schedule()
