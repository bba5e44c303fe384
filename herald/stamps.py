"""Stamp every task message with the time it was published.

Celery's own headers say nothing about when a message entered its queue (``eta`` is when it may
run, not when it was sent), so a ``before_task_publish`` handler adds ``herald_published_at``
(Unix seconds) to the message headers. herald.app imports this module, which connects the handler in
every process that publishes: producers, workers and beat. The backlog scan reads the header
(schedules/queues.py: the age of the oldest message waiting in a queue).
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish

HEADER = "herald_published_at"


@before_task_publish.connect(weak=False)
def stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        # A retry is a new message: it is stamped again, since it starts waiting again.
        headers[HEADER] = time.time()
