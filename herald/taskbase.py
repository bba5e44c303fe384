"""The base task every herald task uses: one retry policy, one dead-letter rule.

- infrastructure errors (the database or the broker unreachable) are an outage, and an outage is waited
  out: retried on the ``retry`` queue with exponential backoff and jitter for as long as it lasts, up
  to ``HERALD_OUTAGE_DEADLINE_S`` (minutes) after the first failure, whatever the number of attempts;
- other transient errors (a connection error or a timeout the task did not handle) are retried the same
  way, at most ``HERALD_MAX_TASK_ATTEMPTS`` times: attempts spent waiting out an outage do not count;
- anything else (bad arguments, an invalid event, a bug) can never succeed by retrying: it is
  written to the dead-letter table with its reason and acknowledged, so a poison message never
  crash-loops a worker;
- when that dead letter cannot be written (the database is down), the message is not acknowledged
  as if done: it is retried on the ``retry`` queue with backoff, for as long as the outage lasts, and
  when even that cannot be published (the broker is down too) it is rejected back to its queue;
- Celery's own control exceptions (``Retry``, ``Ignore``, ``Reject``) pass through untouched, as in a
  plain Celery task.

The two bounds travel with the message as headers (a retry is a new message): ``herald_outage_since``
(Unix time of the first infrastructure failure of the current outage) and ``herald_failures`` (other
transient failures so far).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any, NoReturn

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from herald import deadletters, urgency
from herald.lanes import RETRY_QUEUE, URGENT_QUEUE
from herald.settings import DELIVERY_DEADLINES_S, get_settings

log = logging.getLogger(__name__)

# The database or the broker (or the Redis the delivery gates share with it) cannot be reached: nothing is
# wrong with the task, so it waits, bounded by time. psycopg raises OperationalError for a refused or broken
# connection; kombu wraps the broker's connection errors in its own OperationalError.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
TRANSIENT: tuple[type[BaseException], ...] = (
    *INFRASTRUCTURE,
    ConnectionError,
    TimeoutError,
)

OUTAGE_HEADER = "herald_outage_since"
FAILURES_HEADER = "herald_failures"


def backoff_s(attempt: int, *, retry_after_s: float | None = None) -> float:
    """Exponential backoff with full jitter, bounded; a provider's Retry-After is a floor."""
    settings = get_settings()
    ceiling = min(settings.retry_max_s, settings.retry_base_s * (2 ** attempt))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, settings.retry_max_s)


def delivery_deadline_s(severity: str) -> float:
    """How long a delivery target of this severity may be retried (``HERALD_DELIVERY_DEADLINE_S``)."""
    configured = get_settings().delivery_deadline_s
    return float(configured.get(severity, DELIVERY_DEADLINES_S.get(severity, DELIVERY_DEADLINES_S["info"])))


def deliver_by(severity: str, now: datetime) -> datetime:
    """The deadline of a delivery target written at ``now``: ``deliveries.deliver_by``."""
    return now + timedelta(seconds=delivery_deadline_s(severity))


def interruption(exc: BaseException) -> BaseException | None:
    """The SystemExit or KeyboardInterrupt an exception was raised while handling, if any (a stopping process)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, SystemExit | KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class HeraldTask(Task):  # type: ignore[misc]
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    # Set on the stage whose run, for a page, makes bulk sends hold (deliver: herald/urgency.py).
    page_stage = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        marks = urgency.marks() if self._sends_a_page() else None
        if marks is None:
            return self._call(args, kwargs)
        # a page's deliver batch: bulk sends hold while it runs (herald/urgency.py)
        marks.started(self.request.id)
        try:
            return self._call(args, kwargs)
        finally:
            marks.finished(self.request.id)

    def _sends_a_page(self) -> bool:
        """A deliver task taken from the urgent queue: a page's batch on its way to a provider."""
        return (self.page_stage and bool(self.request.id)
                and (self.request.delivery_info or {}).get("routing_key") == URGENT_QUEUE)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return self.run(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise  # Celery's own control flow: not an error of the task
        except INFRASTRUCTURE as exc:
            return self._wait_out_outage(args, kwargs, exc)
        except TRANSIENT as exc:
            failures = self._failures() + 1
            if failures >= get_settings().max_task_attempts:
                self._dead_letter(args, kwargs, f"retries exhausted after {failures} attempts: {exc!r}")
                return None
            countdown = backoff_s(failures - 1)
            log.warning("task %s[%s] transient error, retry in %.1fs: %r", self.name,
                        self.request.id, countdown, exc)
            # the infrastructure answered, so whatever outage came before is over
            self._retry(exc, countdown, {FAILURES_HEADER: failures, OUTAGE_HEADER: None})
        except Exception as exc:  # the whole point: never crash-loop
            interrupted = interruption(exc)
            if interrupted is not None:
                # The process is being stopped (billiard raises SystemExit from its signal handler, here inside
                # a database call that then failed as a driver error): not the task's fault. Let the exit go
                # on; acks_late and reject_on_worker_lost give the message back for another worker.
                raise interrupted from exc
            self._dead_letter(args, kwargs, f"{type(exc).__name__}: {exc}")
            return None

    def _wait_out_outage(self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: BaseException) -> None:
        """The database or broker is unreachable: retry with backoff until it is back, within the deadline."""
        now = time.time()
        since = float(self._header(OUTAGE_HEADER, None) or now)
        deadline_s = get_settings().outage_deadline_s
        if now - since > deadline_s:
            self._dead_letter(args, kwargs, f"database or broker unreachable for {now - since:.0f}s "
                                            f"(deadline {deadline_s:g}s): {exc!r}")
            return None
        countdown = backoff_s(self.request.retries or 0)
        log.warning("task %s[%s] infrastructure unreachable for %.0fs, retry in %.1fs: %r", self.name,
                    self.request.id, now - since, countdown, exc)
        self._retry(exc, countdown, {OUTAGE_HEADER: since, FAILURES_HEADER: self._failures()})

    def _failures(self) -> int:
        """Transient failures other than an outage so far (a message sent before the header existed: its retries)."""
        if self._header(OUTAGE_HEADER, None) is not None:
            return int(self._header(FAILURES_HEADER, 0))
        return int(self._header(FAILURES_HEADER, self.request.retries or 0))

    def _header(self, name: str, default: Any) -> Any:
        # A worker puts a message's headers on the request itself; apply() keeps them in request.headers.
        value = getattr(self.request, name, None)
        if value is None:
            value = (self.request.headers or {}).get(name)
        return default if value is None else value

    def _retry(self, exc: BaseException, countdown: float, headers: dict[str, Any]) -> NoReturn:
        """Send the task to the retry queue; if that cannot be published, put the message back, never ack it."""
        # Only herald's own headers travel to the retry: the request's others belong to its delivery (on RabbitMQ
        # its ``x-death`` trail, which made RabbitMQ drop a later delayed retry as a cycle; herald/broker.py).
        carried = {FAILURES_HEADER: self._header(FAILURES_HEADER, None),
                   OUTAGE_HEADER: self._header(OUTAGE_HEADER, None), **headers}
        retries = self.request.retries or 0
        try:
            raise self.retry(exc=exc, countdown=countdown, queue=RETRY_QUEUE, max_retries=retries + 1,
                             headers={k: v for k, v in carried.items() if v is not None})
        except Reject as rejected:
            # Celery turns a retry it could not publish into a reject without requeue: that would
            # drop the message. Put it back on its queue instead (or Redis restores it, unacked).
            raise Reject(rejected.reason, requeue=True) from exc

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
        countdown = backoff_s(self.request.retries or 0)
        log.warning("task %s[%s] could not be dead-lettered (%r): retry in %.1fs", self.name,
                    self.request.id, exc, countdown)
        self._retry(exc, countdown, {})
