"""The due-work tick: claims timed work (herald/timers.py) and runs its handlers, recorded as the ``due`` sweep."""

from __future__ import annotations

from datetime import datetime

from herald import timers
from schedules.runs import Summary, run_recorded

SWEEP = "due"


def tick_recorded(now: datetime | None = None) -> Summary:
    return run_recorded(SWEEP, lambda: timers.tick(now))
