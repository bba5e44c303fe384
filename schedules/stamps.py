"""Stamp every task message with the time it was published, and record when beat started.

Celery's own headers say nothing about when a message entered its queue (``eta`` is when it may
run, not when it was sent), so a ``before_task_publish`` handler adds ``herald_published_at``
(Unix seconds) to the message headers. celeryconfig imports this module, which connects the
handler in every process that publishes: producers, workers and beat. Beat's start goes to
``sweep_runs`` (row ``beat``), so that ``herald status`` knows which sweeps are not yet due. Importing
herald.heartbeats here connects, in every worker, the heartbeat ``herald status`` lists pools from.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.signals import beat_embedded_init, beat_init, before_task_publish

import herald.heartbeats  # noqa: F401  (connects worker_ready / worker_shutdown: the workers' heartbeats)

log = logging.getLogger(__name__)

HEADER = "herald_published_at"


@before_task_publish.connect(weak=False)
def stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        # A retry is a new message: it is stamped again, since it starts waiting again.
        headers[HEADER] = time.time()


# --- beat's start ---------------------------------------------------------------------------------

BEAT_ROW = "beat"  # its row in sweep_runs: last_started_at is when beat last started


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
    except Exception:  # noqa: BLE001 - beat must start even when the database is not there yet
        log.warning("could not record beat's start (herald status may call new sweeps overdue)", exc_info=True)


beat_init.connect(record_beat_start, weak=False)  # `herald beat`
beat_embedded_init.connect(record_beat_start, weak=False)  # `herald worker --beat`
