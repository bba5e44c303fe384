"""The recovery sweep: find work whose rows stayed pending past their deadline, enqueue it again.

The broker is only a hint (a Redis restarted without persistence loses its queues); every stage
leaves a row with a status and a time, so nothing depends on a message surviving.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, or_, select

from herald import db
from herald.app import app
from herald.models import Delivery, Event, utcnow
from herald.settings import get_settings

log = logging.getLogger(__name__)

LIMIT = 5000


def recover_stalled() -> dict[str, int]:
    settings = get_settings()
    stale = utcnow() - timedelta(seconds=settings.stall_deadline_s)
    with db.session() as s:
        events = s.execute(select(Event.id, Event.status)
                           .where(Event.status.in_(("received", "enriched", "resolving")), Event.status_at < stale)
                           .limit(LIMIT)).all()
        batches = s.execute(select(Delivery.channel, Delivery.batch_id).where(or_(
            and_(Delivery.status == "pending", Delivery.due_at < stale),
            and_(Delivery.status == "sending", Delivery.updated_at < stale))).distinct().limit(LIMIT)).all()
    for event_id, status in events:
        task = "herald.enrich" if status == "received" else "herald.resolve"
        app.send_task(task, args=[str(event_id)])
    for channel, batch_id in batches:
        app.send_task(f"herald.deliver.{channel}", args=[str(batch_id)])
    if events or batches:
        log.warning("recovered %d stalled events and %d stalled batches", len(events), len(batches))
    return {"events": len(events), "batches": len(batches)}
