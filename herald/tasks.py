"""The base task every herald task uses: one retry policy, one dead-letter rule.

- transient errors (database or broker unreachable, a provider's 5xx) are retried on the
  ``retry`` queue with exponential backoff and jitter, at most ``HERALD_MAX_TASK_ATTEMPTS``;
- anything else (bad arguments, an invalid event, a bug) can never succeed by retrying: it is
  written to the dead-letter table with its reason and acknowledged, so a poison message never
  crash-loops a worker;
- when that dead letter cannot be written (the database is down), the message is not acknowledged
  as if done: it is retried on the ``retry`` queue with backoff, for as long as the outage lasts, and
  when even that cannot be published (the broker is down too) it is rejected back to its queue.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import kombu.exceptions
import sqlalchemy.exc
from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from herald import deadletters
from herald.errors import TransientError
from herald.routing import RETRY_QUEUE
from herald.settings import get_settings

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)


def backoff_s(attempt: int, *, retry_after_s: float | None = None) -> float:
    """Exponential backoff with full jitter, bounded; a provider's Retry-After is a floor."""
    settings = get_settings()
    ceiling = min(settings.retry_max_s, settings.retry_base_s * (2 ** attempt))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, settings.retry_max_s)


class HeraldTask(Task):  # type: ignore[misc]
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.run(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise  # Celery's own control flow: not an error of the task
        except TRANSIENT as exc:
            retries = self.request.retries or 0
            if retries + 1 >= get_settings().max_task_attempts:
                self._dead_letter(args, kwargs, f"retries exhausted after {retries + 1} attempts: {exc!r}")
                return None
            countdown = backoff_s(retries, retry_after_s=getattr(exc, "retry_after_s", None))
            log.warning("task %s[%s] transient error, retry in %.1fs: %r", self.name,
                        self.request.id, countdown, exc)
            raise self.retry(exc=exc, countdown=countdown, queue=RETRY_QUEUE,
                             max_retries=get_settings().max_task_attempts) from exc
        except Exception as exc:  # noqa: BLE001 - the whole point: never crash-loop
            self._dead_letter(args, kwargs, f"{type(exc).__name__}: {exc}")
            return None

    def _dead_letter(self, args: tuple[Any, ...], kwargs: dict[str, Any], reason: str) -> None:
        # The args are ids (or, for ingest, the event, which holds no secrets by contract).
        queue = (self.request.delivery_info or {}).get("routing_key")
        try:
            deadletters.record("task", reason, task_name=self.name, queue=queue,
                               ref={"args": list(args), "kwargs": kwargs, "task_id": self.request.id})
        except Exception as exc:  # noqa: BLE001 - the database is down: the message must survive
            self._wait_out(exc)
        log.exception("task %s[%s] dead-lettered: %s", self.name, self.request.id, reason)

    def _wait_out(self, exc: Exception) -> None:
        """The dead letter could not be written: run the task again later rather than acknowledge it.

        No bound on purpose (an outage is waited out); the backoff is bounded by HERALD_RETRY_MAX_S.
        """
        retries = self.request.retries or 0
        countdown = backoff_s(retries)
        log.warning("task %s[%s] could not be dead-lettered (%r): retry in %.1fs", self.name,
                    self.request.id, exc, countdown)
        try:
            raise self.retry(exc=exc, countdown=countdown, queue=RETRY_QUEUE, max_retries=retries + 1)
        except Reject as rejected:
            # Celery turns a retry it could not publish into a reject without requeue: that would
            # drop the message. Put it back on its queue instead (or Redis restores it, unacked).
            raise Reject(rejected.reason, requeue=True) from exc
