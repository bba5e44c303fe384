"""A Celery consumer that dead-letters every message Celery itself cannot run, and never crashes on one.

Celery logs and drops an undecodable message, a message for an unknown task and a malformed task
message; and some malformed messages it does not catch at all: a herald task name with no ``id``
header raises ``KeyError('id')`` out of the consumer, the worker dies ("Unrecoverable error"), and
every restarted worker dies on the same message. So before Celery's task strategy sees a message,
:func:`problem` checks it against task message protocol 2 (the one herald's producers send:
https://docs.celeryq.dev/en/stable/internals/protocol.html): headers a mapping with string ``task``
and ``id``, well-formed ``retries`` and ``timelimit``, a body ``[args, kwargs, embed]``. A message
that fails is dead-lettered with the reason and acknowledged; whatever Celery's own handler still
raises on a message is caught the same way. Nothing disappears unseen and the worker keeps running.

If the dead letter cannot be written (the database is down), the message is not dropped: it goes
back to its queue, to be tried again when the database answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

from herald import deadletters

log = logging.getLogger(__name__)

REQUEUE_PAUSE_S = 1.0


def _queue(message: Any) -> str | None:
    info = getattr(message, "delivery_info", None) or {}
    return info.get("routing_key") or info.get("exchange")


def _headers(message: Any) -> dict[str, Any]:
    headers = getattr(message, "headers", None)
    return headers if isinstance(headers, dict) else {}


def _number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def body_problem(payload: Any) -> str | None:
    """Why a decoded protocol 2 body is not ``[args, kwargs, embed]``, or None."""
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return f"the body is not [args, kwargs, embed] but {type(payload).__name__}"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        return f"args is {type(args).__name__}, not a list"
    if not isinstance(kwargs, dict):
        return f"kwargs is {type(kwargs).__name__}, not a mapping"
    if embed is not None and not isinstance(embed, dict):
        return f"embed is {type(embed).__name__}, not a mapping"
    for key, value in (embed or {}).items():
        # Celery applies these after the task ran: a malformed one would fail in the pool, unrecorded.
        if key in ("callbacks", "errbacks", "chain") and value is not None and not (
                isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            return f"embed {key} is not a list of signatures"
        if key == "chord" and value is not None and not isinstance(value, dict):
            return "embed chord is not a signature"
    return None


def problem(message: Any) -> str | None:
    """Why a message is not a task message herald's workers can run, or None when it is one."""
    headers = getattr(message, "headers", None)
    if headers is not None and not isinstance(headers, dict):
        return "the headers are not a mapping"
    headers = headers or {}
    try:
        payload = message.decode()  # kombu caches it: Celery's strategy does not decode again
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds
        return f"undecodable message ({getattr(message, 'content_type', None)}): {exc}"
    if "task" not in headers:
        return "message is not a Celery task message (no task header)"
    task, task_id = headers.get("task"), headers.get("id")
    if not isinstance(task, str) or not task:
        return f"the task header is not a name: {task!r}"[:300]
    if not isinstance(task_id, str) or not task_id:
        return f"task message with no usable id header (id={task_id!r})"[:300]
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
        return f"the retries header is not a count: {retries!r}"[:300]
    limit = headers.get("timelimit")
    if limit is not None and not (isinstance(limit, list | tuple) and len(limit) == 2
                                  and all(_number_or_none(v) for v in limit)):
        return f"the timelimit header is not [hard, soft]: {limit!r}"[:300]
    return body_problem(payload)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def _keep(self, reason: str, message: Any, task_name: str | None = None) -> bool:
        """Dead-letter a message; False when the database could not take it."""
        headers = _headers(message)
        name = task_name if task_name is not None else headers.get("task")
        try:
            deadletters.record("message", reason, task_name=name if isinstance(name, str) else None,
                               queue=_queue(message), ref={"headers": headers}, body=message.body)
        except Exception:  # the database is down
            log.exception("could not dead-letter a malformed message (%s): it goes back to its queue", reason)
            return False
        return True

    def _drop(self, reason: str, message: Any) -> None:
        """Keep a malformed message as a dead letter, then take it off the queue (back on it if not kept)."""
        log.warning("malformed message on %s dead-lettered: %s", _queue(message), reason)
        if self._keep(reason, message):
            message.ack()
        else:
            self._put_back(message)

    @staticmethod
    def _put_back(message: Any) -> None:
        # The database is down. The message goes back to its queue; the pause keeps this worker
        # from spinning on it (it has nothing else to do without a database anyway).
        time.sleep(REQUEUE_PAUSE_S)
        message.reject(requeue=True)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        celery_handler = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            reason = problem(message)
            if reason is not None:
                return self._drop(reason, message)
            try:
                return celery_handler(message)
            except self.connection_errors + self.channel_errors:
                raise  # the broker connection: Celery reconnects
            except Exception as exc:  # noqa: BLE001 - what Celery's strategy still chokes on
                if not message.acknowledged:
                    self._drop(f"malformed task message: {type(exc).__name__}: {exc}", message)
                return None

        return on_task_received

    # Celery's own handlers for what it recognises as bad (called through celery_handler above).

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        if not self._keep(f"undecodable message ({message.content_type}): {exc}", message):
            return self._put_back(message)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        if not self._keep("message is not a Celery task message", message):
            return self._put_back(message)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = _headers(message).get("task")
        if not self._keep(f"unknown task {name!r}", message, task_name=name):
            return self._put_back(message)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if not self._keep(f"invalid task message: {exc}", message):
            return self._put_back(message)
        super().on_invalid_task(body, message, exc)
