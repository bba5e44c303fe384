"""A Celery consumer that dead-letters the messages Celery itself cannot run.

Celery logs and drops an undecodable message, a message for an unknown task and a malformed
task message. herald keeps each in the dead-letter table with its reason, then lets Celery
drop it as usual: the worker keeps running and nothing disappears unseen.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from herald import deadletters

log = logging.getLogger(__name__)


def _raw(message: Any) -> str:
    body = message.body
    if isinstance(body, bytes | bytearray):
        return body.decode("utf-8", errors="replace")
    return repr(body)


def _queue(message: Any) -> str | None:
    info = getattr(message, "delivery_info", None) or {}
    return info.get("routing_key") or info.get("exchange")


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def _keep(self, reason: str, message: Any, task_name: str | None = None) -> None:
        try:
            deadletters.record("message", reason, task_name=task_name, queue=_queue(message),
                               body=_raw(message))
        except Exception:  # the database is down: Celery's own log line still tells
            log.exception("could not dead-letter a malformed message")

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._keep(f"undecodable message ({message.content_type}): {exc}", message)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._keep("message is not a Celery task message", message)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task")
        self._keep(f"unknown task {name!r}", message, task_name=name)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._keep(f"invalid task message: {exc}", message)
        super().on_invalid_task(body, message, exc)
