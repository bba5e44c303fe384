"""Nobody reached: a page whose every delivery to a person failed, or whose person had no usable device.

A page is an event of severity critical or error, or the event an escalation step paged with
(an ``incident_pages`` row). When one of its notifications ends that way, herald, in the same transaction
that recorded the last failure (the deliver worker) or the missing devices (resolve):

- records it: the notification's status ``unreached`` and ``unreached_at``, and the step's page row's
  outcome ``unreached`` (herald/escalation.py ``page_of``);
- e-mails the person, when they have an address, e-mail was not already one of the channels tried, and
  they did not opt out of it (herald/channels/email): a delivery of channel ``email``, enqueued on the
  page's lane once the transaction commits;
- moves the chain to its next step at once when nobody the step paged was reached
  (``escalation.advance_now``);
- raises an operations event, ``ops.page_unreached`` from ``herald/deliver`` (the ops lane), unless the page
  was itself one of herald's own operations alerts (no alert about an alert).

Idempotent: ``unreached_at`` is set by one conditional UPDATE, and only the transaction that set it does the
rest; running again (a redelivered batch, a resumed resolve) records nothing twice. Quiet hours never hold a
critical page, and an ``error`` page held by quiet hours is ``suppressed``, which is not unreached: the person
asked for that.

:func:`open_pages` lists the recent unreached pages nobody has answered yet, for ``herald status`` and metrics.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, insert, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from herald import db, escalation
from herald.channels.email import NAME as EMAIL
from herald.channels.email.addresses import ensure as email_addresses
from herald.lanes import PAGE_SEVERITIES, Lane, is_ops, lane_of, queue_for
from herald.models import Delivery, EventRow, Incident, IncidentPage, Notification, utcnow
from herald.settings import get_settings
from herald.taskbase import deliver_by

log = logging.getLogger(__name__)

__all__ = ["UnreachedPage", "after_deliveries", "after_resolve", "open_pages"]

OPS_EVENT = "ops.page_unreached"
_PENDING = "herald_unreached_batches"


@dataclass(frozen=True)
class UnreachedPage:
    """One person a page did not reach, as ``herald status`` lists it."""

    notification_id: int
    event_id: uuid.UUID
    event_type: str
    environment: str
    severity: str
    person_id: str
    unreached_at: datetime
    reason: str | None
    incident_id: int | None
    emailed: str | None  # the e-mail fallback's delivery status (pending, sent, failed, dead), None: not e-mailed


def after_deliveries(s: Session, delivery_ids: Sequence[int]) -> int:
    """The deliver worker, in the transaction that ended these targets failed or dead: record the pages among
    their notifications whose every target has now ended unsent. Returns how many.

    The page notifications are locked first, in id order: when two deliver tasks (two channels' batches) end the
    last two targets of one notification at once, neither sees the other's uncommitted failure, so the second
    waits here for the first's commit and then sees every target ended (the notification's ``failed`` status,
    settled before this call, can miss that race; this check does not)."""
    if not delivery_ids:
        return 0
    of_targets = Notification.id.in_(select(Delivery.notification_id).where(Delivery.id.in_(delivery_ids)))
    pages = (select(Notification.id).join(EventRow, EventRow.id == Notification.event_id)
             .where(of_targets, Notification.unreached_at.is_(None), _is_page()).order_by(Notification.id))
    if db.is_postgres():
        pages = pages.with_for_update(of=Notification)
    locked = list(s.scalars(pages))
    if not locked:
        return 0
    unsent = ~exists().where(Delivery.notification_id == Notification.id, Delivery.status.not_in(("failed", "dead")))
    return _record(s, and_(Notification.id.in_(locked), Notification.status.in_(("queued", "failed")), unsent),
                   "every delivery failed")


def after_resolve(s: Session, notification_ids: Iterable[int]) -> int:
    """Resolve, in the transaction that wrote these notifications: record the pages whose person had no usable
    device (``no_devices``). Returns how many."""
    ids = list(notification_ids)
    if not ids:
        return 0
    return _record(s, and_(Notification.id.in_(ids), Notification.status == "no_devices"), "no usable device")


def _is_page() -> ColumnElement[bool]:
    step_page = exists().where(IncidentPage.event_id == Notification.event_id,
                               IncidentPage.person_id == Notification.person_id)
    return or_(EventRow.severity.in_(PAGE_SEVERITIES), step_page)


def _record(s: Session, which: ColumnElement[bool], why: str) -> int:
    candidates = list(s.scalars(select(Notification.id).join(EventRow, EventRow.id == Notification.event_id)
                                .where(which, Notification.unreached_at.is_(None), _is_page())))
    if not candidates:
        return 0
    now = utcnow()
    # One conditional UPDATE: of two transactions that see the same failure, only one sets unreached_at.
    marked = s.execute(update(Notification).where(Notification.id.in_(candidates), Notification.unreached_at.is_(None))
                       .values(status="unreached", unreached_at=now, status_reason=f"unreached: {why}")
                       .returning(Notification.id, Notification.event_id, Notification.person_id)).all()
    if not marked:
        return 0
    events = {e.id: e for e in s.execute(
        select(EventRow.id, EventRow.type, EventRow.source, EventRow.severity, EventRow.environment,
               EventRow.incident_id).where(EventRow.id.in_({m.event_id for m in marked})))}
    emailed = _email(s, marked, events, now)
    incidents: dict[int, str] = {}
    for m in marked:
        event = events[m.event_id]
        incident_id = _page_unreached(s, m.event_id, m.person_id, now) or event.incident_id
        log.warning("page %s unreached: %s (%s)%s", m.id, m.person_id, why,
                    ", e-mailed" if m.id in emailed else "",
                    extra={"event_id": str(m.event_id), "notification_id": m.id})
        if not is_ops(event.type, event.source):
            _alert(s, m, event, why, m.id in emailed, incident_id)
        if incident_id is not None and incident_id not in incidents and _step_unreached(s, incident_id, m.event_id):
            incidents[incident_id] = f"{m.person_id} unreached ({why})"
    for incident_id, reason in incidents.items():
        _advance(s, incident_id, reason)
    return len(marked)


def _page_unreached(s: Session, event_id: uuid.UUID, person_id: str, now: datetime) -> int | None:
    """Mark the step's page row unreached (never one already answered); returns its incident."""
    page = escalation.page_of(s, event_id, person_id)
    if page is None:
        return None
    if page.outcome in ("paged", "delivered"):
        page.outcome, page.outcome_at = "unreached", now
    return page.incident_id


def _step_unreached(s: Session, incident_id: int, event_id: uuid.UUID) -> bool:
    """Whether to ask the chain to move on: a step's page (escalation.advance_now itself checks that nobody of
    the step's stretch is left), or, for an event no step sent, nobody this event notified can be reached."""
    if s.scalar(select(exists().where(IncidentPage.incident_id == incident_id, IncidentPage.event_id == event_id))):
        return True
    return not s.scalar(select(exists().where(Notification.event_id == event_id,
                                              Notification.unreached_at.is_(None),
                                              Notification.status.in_(("queued", "sent")))))


def _advance(s: Session, incident_id: int, reason: str) -> None:
    moved = escalation.advance_now(s, incident_id, reason=reason)
    log.warning("incident %s: %s; %s", incident_id, reason,
                "the chain's next step runs now" if moved else "the chain had already moved on")


def _email(s: Session, marked: Sequence[Any], events: dict[uuid.UUID, Any], now: datetime) -> set[int]:
    """E-mail the people of these notifications who have an address and were not e-mailed already; their
    batches go out on the page's lane once the transaction commits. Returns the notifications e-mailed."""
    tried = set(s.scalars(select(Delivery.notification_id).where(
        Delivery.notification_id.in_([m.id for m in marked]), Delivery.channel == EMAIL)))
    todo = [m for m in marked if m.id not in tried]
    devices = email_addresses(s, {m.person_id for m in todo})
    rows: list[dict[str, Any]] = []
    batches: list[tuple[uuid.UUID, Lane]] = []
    for m in todo:
        if m.person_id not in devices:
            continue
        event = events[m.event_id]
        batch = uuid.uuid4()
        rows.append({"notification_id": m.id, "device_id": devices[m.person_id], "event_id": m.event_id,
                     "channel": EMAIL, "batch_id": batch, "status": "pending", "attempts": 0, "due_at": now,
                     "deliver_by": deliver_by(event.severity, now), "updated_at": now})
        batches.append((batch, lane_of(event.type, event.source, event.severity)))
    if rows:
        s.execute(insert(Delivery), rows)
        _enqueue_after_commit(s, batches)
    return {r["notification_id"] for r in rows}


def _enqueue_after_commit(s: Session, batches: list[tuple[uuid.UUID, Lane]]) -> None:
    """Enqueue the e-mail batches once their rows are committed (never a task for rows that may roll back);
    if this process dies first, the recovery sweep finds the pending rows."""
    if _PENDING not in s.info:
        sa_event.listen(s, "after_commit", _send_pending)
        sa_event.listen(s, "after_rollback", lambda session: session.info.pop(_PENDING, None))
        s.info[_PENDING] = []
    s.info[_PENDING].extend(batches)


def _send_pending(s: Session) -> None:
    if s.in_nested_transaction():
        return  # a SAVEPOINT released: wait for the real commit
    from herald.app import app

    task = f"herald.deliver.{EMAIL}"
    for batch, lane in s.info.pop(_PENDING, None) or []:
        try:
            app.send_task(task, args=[str(batch)], queue=queue_for(task, lane))
        except Exception:  # the rows are committed: the recovery sweep enqueues them
            log.exception("could not enqueue e-mail batch %s; the recovery sweep will", batch)


def _alert(s: Session, m: Any, event: Any, why: str, emailed: bool, incident_id: int | None) -> None:
    """``ops.page_unreached`` through herald itself, in this transaction (the outbox relays it after commit)."""
    from herald.events import make_event
    from herald.publishing import publish

    steps = "e-mailed instead" if emailed else "no e-mail address to fall back to"
    data: dict[str, Any] = {
        "resource": m.person_id, "metric": "unreached", "value": 1,
        "reason": f"{m.person_id} was not reached for {event.type} ({event.environment}): {why}; {steps}",
        "notification_id": m.id, "event_id": str(m.event_id), "person": m.person_id}
    if incident_id is not None:
        data["incident_id"] = incident_id
    publish(make_event(OPS_EVENT, data, environment=get_settings().ops_environment, source="herald/deliver",
                       idempotency_key=f"herald-unreached-{m.id}"), session=s)


def open_pages(s: Session, limit: int = 50) -> list[UnreachedPage]:
    """The most recent unreached pages nobody has answered: the incident (if any) neither acknowledged nor
    resolved, and the person's page row not answered. Newest first."""
    email = (select(Delivery.status).where(Delivery.notification_id == Notification.id, Delivery.channel == EMAIL)
             .order_by(Delivery.id.desc()).limit(1).scalar_subquery())
    answered = exists().where(IncidentPage.event_id == Notification.event_id,
                              IncidentPage.person_id == Notification.person_id, IncidentPage.outcome == "answered")
    rows = s.execute(
        select(Notification.id, Notification.event_id, Notification.person_id, Notification.unreached_at,
               Notification.status_reason, EventRow.type, EventRow.environment, EventRow.severity,
               EventRow.incident_id, email.label("emailed"))
        .join(EventRow, EventRow.id == Notification.event_id)
        .outerjoin(Incident, Incident.id == EventRow.incident_id)
        .where(Notification.unreached_at.is_not(None), ~answered,
               or_(Incident.id.is_(None), Incident.status == "open"))
        .order_by(Notification.unreached_at.desc(), Notification.id.desc()).limit(limit)).all()
    return [UnreachedPage(r.id, r.event_id, r.type, r.environment, r.severity, r.person_id, r.unreached_at,
                          r.status_reason, r.incident_id, r.emailed) for r in rows]
