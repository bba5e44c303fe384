"""ingest: validate, deduplicate by idempotency key, persist, then the flow's own step.

The one task that receives an event body rather than ids: it is where events enter. What a flow
does besides storing the event (group into incidents, open an approval) is its entry in the per-flow
table (herald/flows.py). Ingest never applies an answer: a ``response.*`` event is accepted only when
a door applied the answer it names (herald/answers.py), so a forged ``herald.ingest`` task (Flower, a
replayed dead letter, ``herald publish``) changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from herald import db
from herald.app import app
from herald.errors import PoisonMessage
from herald.events import Event, validate_event
from herald.flows import FLOWS
from herald.lanes import lane_of, queue_for
from herald.models import EventRow, Outbox, utcnow
from herald.taskbase import HeraldTask

log = logging.getLogger(__name__)


@app.task(base=HeraldTask, name="herald.ingest")
def ingest(envelope: dict[str, Any]) -> str:
    event = validate_event(envelope)
    with db.session() as s:
        status, stored_id = persist(s, event)
    if status == "received":
        lane = lane_of(event.type, event.source, event.effective_severity().value)
        app.send_task("herald.enrich", args=[str(stored_id)], queue=queue_for("herald.enrich", lane))
    log.info("ingested event %s (%s) as %s", stored_id, event.type, status, extra={"event_id": str(stored_id)})
    return status


def persist(s: Session, event: Event) -> tuple[str, uuid.UUID]:
    """Insert the event once; returns its pipeline status (``received`` when enrich should run) and the id
    of the stored event, which for a duplicate is the first copy's."""
    insert = pg_insert if db.is_postgres() else sqlite_insert
    values = dict(
        id=event.id, type=event.type, flow=event.flow.value, source=event.source,
        environment=event.environment, severity=event.effective_severity().value, subject=event.subject,
        idempotency_key=event.key, dedup_key=event.dedup_key(), occurred_at=event.time, data=event.data,
        status="received", received_at=utcnow(), status_at=utcnow(),
    )
    # RETURNING says whether this copy inserted the row; rowcount cannot: SQLAlchemy 2.1 with psycopg 3.3
    # reports -1 for INSERT ... ON CONFLICT DO NOTHING whether or not a row went in.
    inserted = s.scalar(insert(EventRow).values(**values)
                        .on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(EventRow.id))
    s.execute(update(Outbox).where(Outbox.idempotency_key == event.key, Outbox.ingested_at.is_(None))
              .values(ingested_at=utcnow()))
    if inserted is None:
        first_id, first_status = s.execute(select(EventRow.id, EventRow.status)
                                           .where(EventRow.idempotency_key == event.key)).one()
        log.info("event %s duplicates %s (idempotency key %r): ignored", event.id, first_id, event.key,
                 extra={"event_id": str(first_id)})
        # Still 'received': the first run may have died before enqueueing enrich; do it again.
        return ("received" if first_status == "received" else "duplicate"), first_id
    # besides its row, what a new event does is its flow's (open or join an incident, open an approval...)
    return FLOWS[event.flow].ingest(s, s.get_one(EventRow, event.id)), event.id


def event_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError):
        raise PoisonMessage(f"not an event id: {value!r}") from None
