"""Small queries the tests share."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from herald import db
from herald.models import TERMINAL_DELIVERY, Delivery, EventRow


def event_status(event_id: uuid.UUID) -> str | None:
    with db.session() as s:
        return s.scalar(select(EventRow.status).where(EventRow.id == event_id))


def pending_targets(event_ids: list[uuid.UUID] | None = None) -> int:
    with db.session() as s:
        q = select(func.count()).select_from(Delivery).where(Delivery.status.not_in(TERMINAL_DELIVERY))
        if event_ids is not None:
            q = q.where(Delivery.event_id.in_(event_ids))
        return s.scalar(q) or 0


def all_done(event_ids: list[uuid.UUID]) -> bool:
    """Every event went through the pipeline and every one of its targets is terminal."""
    with db.session() as s:
        statuses = list(s.scalars(select(EventRow.status).where(EventRow.id.in_(event_ids))))
    if len(statuses) != len(event_ids) or any(st in ("received", "enriched", "resolving") for st in statuses):
        return False
    return pending_targets(event_ids) == 0


def rows(query: Any) -> list[Any]:
    with db.session() as s:
        return list(s.execute(query).all())
