"""deliver.<channel>: one task per registered channel and batch; each target ends in a recorded state.

The task takes a batch id, claims the batch's due targets in Postgres (``sending``), sends
them through the channel, then records one attempt row per target and its new state in bulk:

- sent: done;
- transient: back to pending with a backoff (jitter, Retry-After honoured, at most
  ``HERALD_RETRY_MAX_S``; a host that gave no answer is tried again within
  ``HERALD_CHANNEL_CIRCUIT_MAX_OPEN_S``), re-enqueued on the ``retry`` queue, until the target's
  deadline (``deliveries.deliver_by``, by severity: ``HERALD_DELIVERY_DEADLINE_S``); past it, it is
  dead-lettered with "delivery deadline passed". ``HERALD_MAX_DELIVERY_ATTEMPTS`` is a safety bound on
  top of the deadline, and the only bound of a target without one (written before migration 0006);
- uncertain: the request was sent and no answer came (a timeout, the connection lost after
  sending), so the provider may have delivered it: retried like transient, and every later attempt
  of that target is recorded ``resend`` with "resend after an uncertain send (attempt N)" in its
  reason. Each copy carries the same collapse id / Topic (payload.collapse_key), so a phone that
  got both shows one notification;
- permanent: failed with the provider's reason, the token stays;
- auth: herald's own credentials were refused: dead-lettered (replay once they are fixed), the
  token stays, and the channel raised an operations event;
- invalid_token: failed, and the device is deactivated (one bulk UPDATE);
- deferred: never sent (the provider asked to wait, or its circuit opened): pending again
  without spending an attempt, and no attempt row since nothing was attempted; due again when the
  circuit lets a probe through (never after the deadline: then dead-lettered as above).

A task runs again for its batch while any target of the batch is pending: when the earliest is due,
whichever targets it claimed (one sent early never leaves a later one to the recovery sweep).

Each provider host has its own circuit breaker (APNs sandbox and production are two): while a
host's circuit is open its targets are deferred, so an outage spends no attempts; a half-open
probe that gets no answer is recorded but not counted as its target's attempt
(herald/channels/gate.py, herald/channels/sender.py).

Redelivered (at-least-once queues): targets already sent are skipped; a target left
``sending`` by a worker that died is resent only once its claim is older than
``HERALD_STALL_DEADLINE_S``, and the lost attempt is recorded as such (its resend too, as after
an uncertain send).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery.signals import worker_init
from sqlalchemy import Table, and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from herald import actions, channels, db, deadletters, metrics, unreached
from herald.app import app
from herald.channels.sender import MAX_REASON_CHARS, is_down
from herald.channels.types import Channel, Message, Payload, Result, Target
from herald.errors import PoisonMessage
from herald.lanes import URGENT_QUEUE, Lane, lane_of, queue_for
from herald.models import Delivery, DeliveryAttempt, Device, EventRow, Notification, Person, utcnow
from herald.payload import collapse_key, render, responder_url
from herald.settings import get_settings
from herald.taskbase import HeraldTask, backoff_s

log = logging.getLogger(__name__)

# The tables themselves, for Core statements on the hot path (record()).
ATTEMPTS: Table = DeliveryAttempt.__table__  # type: ignore[assignment]
DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]

# Attempts whose copy may have reached the provider: a later copy of the target is a resend.
UNCERTAIN = ("uncertain", "lost")
# Outcomes retried with backoff until the target's deadline (deliveries.deliver_by).
RETRIED = ("transient", "uncertain")

# Time to live per severity: a stale "artifact deployed" is noise, a critical alert is not.
TTL_S = {"info": 3600, "warning": 6 * 3600, "error": 24 * 3600, "critical": 72 * 3600}


class _Channels:
    """The configured backend of each channel (its spec's ``build``), built once per process.

    A lock, not functools.cache: with a threads pool, batches that start together would each build
    a channel (and its client session) and all but one would be dropped unclosed.
    """

    def __init__(self) -> None:
        self.built: dict[str, Channel] = {}
        self.lock = threading.Lock()

    def __call__(self, name: str) -> Channel:
        with self.lock:
            if name not in self.built:
                self.built[name] = channels.get(name).build()
            return self.built[name]

    def cache_clear(self) -> None:
        """Forget the built channels (settings changed, or a forked child: the parent's connections)."""
        self.built = {}
        self.lock = threading.Lock()


channel_for = _Channels()


def _batch(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError):
        raise PoisonMessage(f"not a batch id: {value!r}") from None


def claim(batch_id: uuid.UUID, task_id: str | None) -> tuple[list[Message], dict[int, str]]:
    """Mark the batch's due targets ``sending`` and build their messages.

    Also returns the resends: the targets an earlier copy of which may have reached the provider
    (an ``uncertain`` attempt, or one ``lost`` with its worker), with why, for their attempt rows.
    """
    settings = get_settings()
    now = utcnow()
    stale = now - timedelta(seconds=settings.stall_deadline_s)
    due = or_(and_(Delivery.status == "pending", Delivery.due_at <= now),
              and_(Delivery.status == "sending", Delivery.updated_at < stale))
    with db.session() as s:
        query = select(Delivery.id, Delivery.status, Delivery.attempts).where(Delivery.batch_id == batch_id, due)
        if db.is_postgres():
            query = query.with_for_update(skip_locked=True)
        rows = s.execute(query).all()
        if not rows:
            return [], {}
        # The UPDATE checks the condition again: where rows cannot be locked (SQLite), a second task
        # that read the same rows claims none of them, so nothing is sent twice.
        ids = list(s.scalars(update(Delivery).where(Delivery.id.in_([r.id for r in rows]), due)
                             .values(status="sending", attempts=Delivery.attempts + 1, updated_at=now)
                             .returning(Delivery.id)))
        if not ids:
            return [], {}
        claimed = set(ids)
        lost = {r.id for r in rows if r.status == "sending" and r.id in claimed}
        if lost:
            s.execute(insert(DeliveryAttempt), [
                {"delivery_id": r.id, "attempt": r.attempts, "at": now, "outcome": "lost",
                 "reason": "in flight when its worker stopped; resent", "task_id": task_id}
                for r in rows if r.id in lost])
        resends = _resends(s, [r.id for r in rows if r.attempts > 0 and r.id in claimed])
        loaded = s.execute(
            select(Delivery.id, Delivery.attempts, Delivery.notification_id, Delivery.event_id,
                   Device.id.label("device_id"), Device.token, Device.token_kind, Device.app, Device.environment,
                   Device.device_registered_at, Notification.ids_only, Notification.person_id,
                   Notification.created_at.label("notified_at"))
            .join(Device, Device.id == Delivery.device_id)
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Delivery.id.in_(ids))).all()
        # A batch belongs to one event: load (and decode) its data once, not once per target.
        events = {e.id: e for e in s.execute(
            select(EventRow.id, EventRow.type, EventRow.flow, EventRow.environment, EventRow.severity, EventRow.data,
                   EventRow.enrichment, EventRow.dedup_key, EventRow.incident_id)
            .where(EventRow.id.in_({r.event_id for r in loaded})))}
        payloads = _payloads(s, loaded, events)
    messages = []
    for r in loaded:
        e = events[r.event_id]
        messages.append(Message(
            target=Target(r.id, r.device_id, r.token, r.token_kind, r.app, r.environment, r.attempts,
                          r.device_registered_at),
            payload=payloads[r.notification_id], severity=e.severity,
            collapse_key=collapse_key(e.dedup_key, r.notification_id), thread_key=e.dedup_key,
            ttl_s=TTL_S.get(e.severity, 3600)))
    return messages, resends


def _payloads(s: Session, loaded: Sequence[Any], events: dict[uuid.UUID, Any]) -> dict[int, Payload]:
    """One payload per notification, shared by its devices: rendered, and its action tokens minted, once."""
    offers = {event_id: actions.offer(s, e) for event_id, e in events.items()}
    # An approval's requester gets no vote under any name the directory knows them by.
    people = _people(s, {r.person_id for r in loaded}) if any(o and o.requester for o in offers.values()) else {}
    payloads: dict[int, Payload] = {}
    for r in loaded:
        if r.notification_id in payloads:
            continue
        e, offer = events[r.event_id], offers[r.event_id]
        title, body, link, data = render(
            event_id=str(e.id), event_type=e.type, flow=e.flow, environment=e.environment,
            severity=e.severity, data=e.data, notification_id=r.notification_id, ids_only=r.ids_only,
            enrichment=e.enrichment)
        tokens: dict[str, str] = {}
        if offer is not None and offer.for_person(people.get(r.person_id) or actions.names(None, r.person_id)):
            try:
                tokens = offer.tokens(r.notification_id, r.person_id, r.notified_at)
            except (actions.ActionKeysMissing, ValueError) as exc:
                # The page matters more than its buttons: sent without them, and said once per batch.
                log.error("event %s: notifications sent without action tokens: %s", e.id, exc,
                          extra={"event_id": str(e.id), "notification_id": r.notification_id})
                offers[r.event_id] = None
        payloads[r.notification_id] = Payload(title, body, link, data, tokens,
                                              offer.category if offer is not None and tokens else None,
                                              responder_url(r.notification_id))
    return payloads


def _people(s: Session, person_ids: set[str]) -> dict[str, set[str]]:
    rows = s.execute(select(Person.id, Person.email, Person.aliases).where(Person.id.in_(person_ids)))
    return {p.id: actions.names(p, p.id) for p in rows}


def _resends(s: Session, delivery_ids: list[int]) -> dict[int, str]:
    """Why each of these targets is resent, for those an earlier copy of which may have been delivered."""
    if not delivery_ids:
        return {}  # first sends: no query on the hot path
    earlier = s.execute(select(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt, DeliveryAttempt.outcome)
                        .where(DeliveryAttempt.delivery_id.in_(delivery_ids),
                               DeliveryAttempt.outcome.in_(UNCERTAIN))
                        .order_by(DeliveryAttempt.attempt.desc())).all()
    return {r.delivery_id: f"resend after an {r.outcome} send (attempt {r.attempt})" for r in earlier}


@dataclass
class _Rows:
    """What one batch's results write, sorted by kind (see :func:`record`)."""

    now: datetime
    task_id: str | None
    resends: dict[int, str]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    plain_sent: list[int] = field(default_factory=list)  # sent with no note: one UPDATE for all of them
    dead_tokens: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    auth: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    moved: dict[str, list[int]] = field(default_factory=dict)
    retry_in: float | None = None
    deadlines: dict[int, datetime | None] = field(default_factory=dict)  # deliver_by of the unsent targets
    expired: list[int] = field(default_factory=list)  # among ``dead``: their deadline passed

    def expire(self, result: Result, target: Target, row: dict[str, Any]) -> bool:
        """Dead-letter the target when its deadline passed (or comes before its provider's Retry-After)."""
        deliver_by = self.deadlines.get(result.delivery_id)
        # the provider's own Retry-After (a probe's or a deferral's wait is the circuit's, never past the deadline)
        wait = result.retry_after_s if result.outcome == "transient" and not result.probe else None
        if deliver_by is None or self.now + timedelta(seconds=min(wait or 0.0, 86400.0 * 365)) < deliver_by:
            return False
        why = f"delivery deadline passed ({deliver_by:%Y-%m-%d %H:%M:%S}Z): {result.outcome}: {result.reason}"
        row.update(status="dead", last_error=why[:MAX_REASON_CHARS])
        self.dead.append(result.delivery_id)
        self.expired.append(result.delivery_id)
        return True

    def due(self, result: Result, delay: float) -> datetime:
        """When to try again: after ``delay``, but never after the deadline (the last try is at it)."""
        due = self.now + timedelta(seconds=delay)
        deliver_by = self.deadlines.get(result.delivery_id)
        if deliver_by is not None and due > deliver_by:
            due = deliver_by
            delay = max(0.0, (deliver_by - self.now).total_seconds())
        self.retry_after(delay)
        return due

    def retry_after(self, delay: float) -> None:
        self.retry_in = delay if self.retry_in is None else min(self.retry_in, delay)

    def attempt(self, result: Result, target: Target) -> None:
        # A resend says so, and after what: the provider may already have shown the person a copy.
        why = self.resends.get(result.delivery_id)
        reason = result.reason if why is None else f"{why}: {result.reason}" if result.reason else why
        self.attempts.append({
            "delivery_id": result.delivery_id, "attempt": target.attempt, "at": self.now,
            "outcome": result.outcome, "provider_status": result.provider_status,
            "reason": reason[:MAX_REASON_CHARS] if reason else None, "latency_ms": result.latency_ms,
            "resend": why is not None, "task_id": self.task_id})

    def give_back(self, result: Result, target: Target) -> None:
        """Pending again without spending the claim's attempt (deferred, or a failed circuit probe)."""
        row = {"id": result.delivery_id, "updated_at": self.now, "attempts": target.attempt - 1,
               "last_error": result.reason}
        if not self.expire(result, target, row):
            row.update(status="pending", due_at=self.due(result, result.retry_after_s or 1.0))
        self.updates.append(row)


def _sort(rows: _Rows, result: Result, target: Target, max_attempts: int) -> None:
    """Add one target's result to the rows: its attempt row and its new state."""
    if result.outcome == "deferred":
        rows.give_back(result, target)  # never sent: no attempt to record
        return
    rows.attempt(result, target)
    if result.probe and result.outcome in RETRIED:
        # The circuit's probe found its host still down: a try of the host, not of this target.
        rows.give_back(result, target)
        return
    if result.environment is not None:
        rows.moved.setdefault(result.environment, []).append(target.device_id)
    if result.outcome == "sent" and result.reason is None:
        rows.sent.append(result.delivery_id)
        rows.plain_sent.append(result.delivery_id)  # the common case
        return
    rows.updates.append(_settled(rows, result, target, max_attempts))


def _settled(rows: _Rows, result: Result, target: Target, max_attempts: int) -> dict[str, Any]:
    """The delivery row's new state after an attempt (sent with a note, retried, or ended)."""
    row: dict[str, Any] = {"id": result.delivery_id, "updated_at": rows.now, "last_error": result.reason}
    if result.outcome == "sent":
        rows.sent.append(result.delivery_id)
        row.update(status="sent", sent_at=rows.now)
    elif result.outcome in RETRIED and rows.expire(result, target, row):
        pass  # its deadline passed: dead, with that reason
    elif result.outcome in RETRIED and target.attempt < max_attempts:
        delay = backoff_s(target.attempt - 1, retry_after_s=result.retry_after_s)
        if is_down(result) and result.retry_after_s is None:
            # No answer from the host: tried again at the circuit's pace, so once the host is back its
            # targets go out within HERALD_CHANNEL_CIRCUIT_MAX_OPEN_S, not after a long backoff.
            delay = min(delay, get_settings().channel_circuit_max_open_s)
        row.update(status="pending", due_at=rows.due(result, delay))
    elif result.outcome in RETRIED:
        row.update(status="dead", last_error=f"retries exhausted: {result.reason}"[:MAX_REASON_CHARS])
        rows.dead.append(result.delivery_id)
    elif result.outcome == "auth":
        row.update(status="dead", last_error=f"credentials refused: {result.reason}")
        rows.auth.append(result.delivery_id)
    else:
        row["status"] = "failed"
        rows.failed.append(result.delivery_id)
        if result.outcome == "invalid_token":
            rows.dead_tokens.append(target.device_id)
    return row


def record(messages: list[Message], results: list[Result], resends: dict[int, str], task_id: str | None
           ) -> float | None:
    """Store attempts and new states in bulk; returns the countdown of a retry, if one is needed."""
    max_attempts = get_settings().max_delivery_attempts
    by_id = {m.target.delivery_id: m for m in messages}
    missing = set(by_id) - {r.delivery_id for r in results}
    results = results + [Result(i, "transient", None, "channel returned no result") for i in missing]
    rows = _Rows(utcnow(), task_id, resends)
    unsent = [r.delivery_id for r in results if r.outcome in (*RETRIED, "deferred")]
    if unsent:
        with db.session() as s:
            found = s.execute(select(Delivery.id, Delivery.deliver_by).where(Delivery.id.in_(unsent)))
            rows.deadlines = {delivery_id: deadline for delivery_id, deadline in found}
    for result in results:
        _sort(rows, result, by_id[result.delivery_id].target, max_attempts)
    with db.session() as s:
        _write(s, rows, max_attempts)
    _log_unsent(rows)
    return rows.retry_in


LOGGED_IDS = 20  # delivery ids named in one log line; the rest are counted
_UNSENT = {"pending": "to be retried", "failed": "failed", "dead": "dead"}  # a row's new status, as logged


def _log_unsent(rows: _Rows) -> None:
    """One log line per outcome and reason of the batch's targets that were not sent, naming their delivery ids
    (``herald deadletters list`` and the database name the same ids): dead ones (a dead letter holds them) as a
    warning, failed (the provider refused the target for good, e.g. an uninstalled app's token) and retried ones
    as info. Nothing for the sent, the common case."""
    groups: dict[tuple[str, str], list[int]] = {}
    for row in rows.updates:
        if row.get("status") in _UNSENT:
            groups.setdefault((row["status"], row.get("last_error") or "no reason given"), []).append(row["id"])
    for (status, reason), ids in groups.items():
        extra: dict[str, Any] = {"task_id": rows.task_id}
        if len(ids) == 1:
            extra["delivery_id"] = ids[0]
        log.log(logging.WARNING if status == "dead" else logging.INFO, "%d target(s) %s: %s (delivery %s)",
                len(ids), _UNSENT[status], reason, named(ids), extra=extra)


def named(ids: Sequence[int]) -> str:
    """``1, 2, 3``; past :data:`LOGGED_IDS` the rest are counted: ``1, ..., 20 and 480 more``."""
    more = len(ids) - LOGGED_IDS
    return ", ".join(map(str, ids[:LOGGED_IDS])) + (f" and {more} more" if more > 0 else "")


def _write(s: Session, rows: _Rows, max_attempts: int) -> None:
    now = rows.now
    # Core statements, not the ORM's bulk paths: per-row ORM bookkeeping was the largest
    # part of a batch's CPU after the sends (bench/RESULTS.md, "hot path").
    if rows.attempts:
        s.execute(insert(ATTEMPTS), rows.attempts)
    if rows.plain_sent:
        s.execute(update(DELIVERIES).where(DELIVERIES.c.id.in_(rows.plain_sent))
                  .values(status="sent", sent_at=now, updated_at=now, last_error=None))
    if rows.updates:
        s.execute(update(Delivery), rows.updates)
    for environment, device_ids in rows.moved.items():
        # APNs: the token answered on the other host; send there from now on.
        s.execute(update(Device).where(Device.id.in_(device_ids)).values(environment=environment))
    settle_notifications(s, rows.sent, failed=rows.failed + rows.dead + rows.auth, now=now)
    unreached.after_deliveries(s, rows.failed + rows.dead + rows.auth)  # a page that reached nobody
    if rows.dead_tokens:
        s.execute(update(Device).where(Device.id.in_(rows.dead_tokens))
                  .values(active=False, deactivated_at=now, deactivated_reason="provider: invalid token"))
    # In the same transaction as the targets' `dead` state: a target is never dead without its dead letter.
    exhausted = [i for i in rows.dead if i not in rows.expired]
    if exhausted:
        deadletters.record("delivery", f"{len(exhausted)} target(s): retries exhausted after "
                           f"{max_attempts} attempts",
                           task_name=None, ref={"delivery_ids": exhausted}, session=s)
    if rows.expired:
        deadletters.record("delivery", f"{len(rows.expired)} target(s): delivery deadline passed before they "
                           "could be delivered (HERALD_DELIVERY_DEADLINE_S)",
                           task_name=None, ref={"delivery_ids": rows.expired}, session=s)
    if rows.auth:
        deadletters.record("delivery", f"{len(rows.auth)} target(s): the provider refused herald's credentials; "
                           "fix them, then replay", task_name=None, ref={"delivery_ids": rows.auth}, session=s)


def settle_notifications(s: Session, sent: list[int], *, failed: list[int], now: datetime) -> None:
    """A notification's status follows its deliveries: ``sent`` once one of them is sent, ``failed`` once
    every one of them ended without being sent; ``queued`` until then."""
    if sent:
        s.execute(update(Notification).where(
            Notification.id.in_(select(Delivery.notification_id).where(Delivery.id.in_(sent))),
            Notification.status != "sent",
        ).values(status="sent", status_reason=None,
                 first_delivered_at=func.coalesce(Notification.first_delivered_at, now)))
    if failed:
        other = aliased(Delivery)
        s.execute(update(Notification).where(
            Notification.id.in_(select(Delivery.notification_id).where(Delivery.id.in_(failed))),
            Notification.status == "queued",
            ~exists().where(other.notification_id == Notification.id, other.status.not_in(("failed", "dead"))),
        ).values(status="failed", status_reason="no delivery succeeded"))


def deliver_batch(channel_name: str, batch_id: str, task_id: str | None) -> int:
    key = _batch(batch_id)
    channel = channel_for(channel_name)
    messages, resends = claim(key, task_id)
    if not messages:
        return 0
    started = time.perf_counter()
    results = channel.send(messages)
    record(messages, results, resends, task_id)
    retry_in = _next_run(key)
    metrics.delivered(channel_name, results)  # herald_deliveries_total and publish-to-sent (herald/metrics.py)
    log.info("batch %s on %s: %d targets in %.0f ms", batch_id, channel_name, len(messages),
             (time.perf_counter() - started) * 1000, extra={"batch_id": batch_id, "task_id": task_id})
    if retry_in is not None:
        # Only the transient targets are pending again; the retry pool runs them when due (an
        # operations alert's or a page's batch stays on its lane: herald/lanes.py).
        task = channels.get(channel_name).task
        app.send_task(task, args=[batch_id], queue=queue_for(task, _lane(key), retry=True),
                      countdown=retry_in)
    return len(messages)


def _next_run(batch_id: uuid.UUID) -> float | None:
    """The countdown of the batch's next task: when its earliest pending target is due, claimed by this task
    or not (a target not due when this one ran is not left to the recovery sweep)."""
    with db.session() as s:
        due = s.scalar(select(func.min(Delivery.due_at)).where(Delivery.batch_id == batch_id,
                                                                Delivery.status == "pending"))
    return None if due is None else max(0.0, (due - utcnow()).total_seconds())


def _lane(batch_id: uuid.UUID) -> Lane:
    """The lane of a batch's event (a batch holds one event): an alert's or a page's retry keeps its lane."""
    with db.session() as s:
        event = s.execute(select(EventRow.type, EventRow.source, EventRow.severity)
                          .join(Delivery, Delivery.event_id == EventRow.id)
                          .where(Delivery.batch_id == batch_id).limit(1)).first()
    return "bulk" if event is None else lane_of(event.type, event.source, event.severity)


def make_task(spec: channels.ChannelSpec) -> Any:
    """The Celery task that delivers one channel's batches (``herald.deliver.<name>``)."""

    @app.task(base=HeraldTask, name=spec.task, bind=True, page_stage=True)
    def deliver(self: HeraldTask, batch_id: str) -> int:
        return deliver_batch(spec.name, batch_id, self.request.id)

    deliver.__doc__ = f"Deliver one batch of {spec.title} targets."
    return deliver


# One task per registered channel (herald/channels/registry.py).
TASKS = {spec.name: make_task(spec) for spec in channels.specs()}

# A forked child builds its own channels (their connections and loop belong to the parent).
os.register_at_fork(after_in_child=channel_for.cache_clear)


def preload_providers(consumed: set[str] | None) -> list[str]:
    """Import the provider modules of the channels a worker consuming ``consumed`` may send on (every channel
    for the urgent pool, or when the queues are not known); returns their names."""
    loaded = []
    for spec in channels.specs():
        if consumed is not None and spec.queue not in consumed and URGENT_QUEUE not in consumed:
            continue
        if spec.preload_provider():
            loaded.append(spec.name)
    return loaded


@worker_init.connect
def _preload_before_fork(sender: Any = None, **_: Any) -> None:
    """In a worker's main process, before it forks its pool (herald/channels/spec.py ``preload``)."""
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    consume_from = getattr(queues, "consume_from", None)
    try:
        preload_providers(set(consume_from) if consume_from else None)
    except Exception:  # a channel that cannot load says so at its first batch, as before
        log.warning("could not import a channel's provider ahead of its first batch", exc_info=True)
