"""An in-memory SQLite database with herald's tables, and events stored as ingest stores them.

The domain modules (herald/incidents.py, herald/approvals.py, herald/flows.py) are plain functions over
a session, so their rules are tested here without services. The session never commits: an event
published in it (an escalation page) stays an outbox row and never reaches a broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.db import make_engine
from herald.events import make_event
from herald.models import AuditLog, Base, EventRow


@contextmanager
def memory_session() -> Iterator[Session]:
    """A session on a fresh in-memory database built by herald's own SQLite engine (foreign keys on)."""
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine)
    try:
        with Session(engine, expire_on_commit=False) as s:
            yield s
            s.rollback()
    finally:
        engine.dispose()


def stored_event(s: Session, type: str, data: dict[str, Any], *, environment: str = "prod",
                 **fields: Any) -> EventRow:
    """The row ingest would store for this event (validated first, as ingest does)."""
    event = make_event(type, data, environment=environment, **fields)
    row = EventRow(id=event.id, type=event.type, flow=event.flow.value, source=event.source,
                   environment=event.environment, severity=event.effective_severity().value,
                   subject=event.subject, idempotency_key=event.key, dedup_key=event.dedup_key(),
                   occurred_at=event.time, data=event.data, status="received")
    s.add(row)
    s.flush()
    return row


def audited(s: Session) -> list[tuple[str, str, str]]:
    """(actor, action, subject id) of every audit row, in order."""
    s.flush()
    return [(a.actor, a.action, a.subject_id) for a in s.scalars(select(AuditLog).order_by(AuditLog.id))]
