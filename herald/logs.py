"""Structured log lines: every line a worker writes carries the ids it is about.

Code logs with ``extra={"event_id": ..., "batch_id": ...}``; inside a task the task's name and
id are added too, so a person can grep one id through every pool's log.
"""

from __future__ import annotations

import logging

IDS = ("event_id", "notification_id", "delivery_id", "batch_id", "dead_letter_id", "task_id")


class IdsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_herald_ids", False):
            return True
        parts = [f"{key}={getattr(record, key)}" for key in IDS if getattr(record, key, None) is not None]
        if not hasattr(record, "task_id"):
            from celery import current_task

            request = getattr(current_task, "request", None)
            if request is not None and getattr(request, "id", None):
                parts.append(f"task={current_task.name} task_id={request.id}")
        if parts and record.name.startswith(("herald", "workers", "schedules", "producers")):
            record.msg = f"{record.msg} [{' '.join(parts)}]"
        record._herald_ids = True
        return True


def install(logger: logging.Logger) -> None:
    """Add the ids to every handler of ``logger`` (called when Celery sets up its logging)."""
    for handler in logger.handlers:
        if not any(isinstance(f, IdsFilter) for f in handler.filters):
            handler.addFilter(IdsFilter())
