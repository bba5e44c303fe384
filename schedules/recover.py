"""The recovery sweep: find work whose rows stayed pending past their deadline, enqueue it again.

The broker is only a hint (a Redis restarted without persistence loses its queues); every stage
leaves a row with a status and a time, so nothing depends on a message surviving.

Once per stall, not once per sweep: each event or batch re-enqueued is marked ``recovered_at`` (in the
same statement that selects it, so two sweeps never both take it), and it is re-enqueued again only if
it is still stalled a whole deadline after that. A pool that is down for an hour therefore finds one
message per stalled item per ``HERALD_STALL_DEADLINE_S`` waiting for it, not one per sweep period
(a down deliver pool piled up 6,469 messages that way). ``recovered_at`` is a column of its own because
``status_at`` and ``updated_at`` are the leases the tasks check (a ``resolving`` event or a ``sending``
target is taken over only once they are stale) and the delay the backlog scan measures.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from herald import db
from herald.app import app
from herald.models import Delivery, Event, utcnow
from herald.settings import get_settings

log = logging.getLogger(__name__)

LIMIT = 5000
EVENT_STAGES = ("received", "enriched", "resolving")


def _not_recovered_since(column: InstrumentedAttribute[datetime | None], stale: datetime) -> ColumnElement[bool]:
    return or_(column.is_(None), column < stale)


def recover_stalled() -> dict[str, int]:
    now = utcnow()
    stale = now - timedelta(seconds=get_settings().stall_deadline_s)
    events = _claim_events(now, stale)
    batches = _claim_batches(now, stale)
    try:
        for event_id, status in events:
            task = "herald.enrich" if status == "received" else "herald.resolve"
            app.send_task(task, args=[str(event_id)])
        for channel, batch_id in batches:
            app.send_task(f"herald.deliver.{channel}", args=[str(batch_id)])
    except Exception:
        _unmark(events, batches)  # not enqueued (the broker is down): the next sweep tries again
        raise
    if events or batches:
        log.warning("recovered %d stalled events and %d stalled batches", len(events), len(batches))
    return {"events": len(events), "batches": len(batches)}


def _claim_events(now: datetime, stale: datetime) -> list[tuple[uuid.UUID, str]]:
    stalled = and_(Event.status.in_(EVENT_STAGES), Event.status_at < stale,
                   _not_recovered_since(Event.recovered_at, stale))
    with db.session() as s:
        ids = select(Event.id).where(stalled).limit(LIMIT)
        if db.is_postgres():
            ids = ids.with_for_update(skip_locked=True)  # a task holds the row: it is not stalled
        return [(r.id, r.status) for r in s.execute(
            update(Event).where(Event.id.in_(ids.scalar_subquery()), stalled)
            .values(recovered_at=now).returning(Event.id, Event.status))]


def _claim_batches(now: datetime, stale: datetime) -> list[tuple[str, uuid.UUID]]:
    stalled = and_(or_(and_(Delivery.status == "pending", Delivery.due_at < stale),
                       and_(Delivery.status == "sending", Delivery.updated_at < stale)),
                   _not_recovered_since(Delivery.recovered_at, stale))
    with db.session() as s:
        batches = s.execute(select(Delivery.channel, Delivery.batch_id).where(stalled).distinct()
                            .limit(LIMIT)).all()
        if batches:
            s.execute(update(Delivery).where(Delivery.batch_id.in_([b.batch_id for b in batches]), stalled)
                      .values(recovered_at=now))
    return [(b.channel, b.batch_id) for b in batches]


def _unmark(events: Sequence[tuple[uuid.UUID, str]], batches: Sequence[tuple[str, uuid.UUID]]) -> None:
    try:
        with db.session() as s:
            if events:
                s.execute(update(Event).where(Event.id.in_([e for e, _ in events])).values(recovered_at=None))
            if batches:
                s.execute(update(Delivery).where(Delivery.batch_id.in_([b for _, b in batches]))
                          .values(recovered_at=None))
    except Exception:  # noqa: BLE001 - then they wait one more deadline, nothing worse
        log.warning("could not clear the recovery marks of work not re-enqueued", exc_info=True)
