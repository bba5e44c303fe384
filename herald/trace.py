"""Read an event's whole story back: notifications, deliveries and every attempt."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from herald import db
from herald.models import Approval, Delivery, DeliveryAttempt, EventRow, Incident, Notification


def _row(obj: Any, *skip: str) -> dict[str, Any]:
    return {c.key: (v.isoformat() if hasattr(v, "isoformat") else str(v) if isinstance(v, uuid.UUID) else v)
            for c in obj.__table__.columns if c.key not in skip for v in [getattr(obj, c.key)]}


def trace(event_id: uuid.UUID) -> dict[str, Any] | None:
    with db.session() as s:
        event = s.get(EventRow, event_id)
        if event is None:
            return None
        notifications = list(s.scalars(select(Notification).where(Notification.event_id == event_id)
                                       .order_by(Notification.id)))
        deliveries = list(s.scalars(select(Delivery).where(Delivery.event_id == event_id).order_by(Delivery.id)))
        attempts = list(s.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(
            [d.id for d in deliveries])).order_by(DeliveryAttempt.id)))
        incident = s.get(Incident, event.incident_id) if event.incident_id else None
        approval = s.scalar(select(Approval).where(Approval.event_id == event_id))
        by_delivery: dict[int, list[dict[str, Any]]] = {}
        for a in attempts:
            by_delivery.setdefault(a.delivery_id, []).append(_row(a, "delivery_id"))
        by_notification: dict[int, list[dict[str, Any]]] = {}
        for d in deliveries:
            by_notification.setdefault(d.notification_id, []).append(
                {**_row(d, "notification_id", "event_id", "batch_id"), "attempts": by_delivery.get(d.id, [])})
        return {
            "event": _row(event),
            "incident": _row(incident) if incident else None,
            "approval": _row(approval) if approval else None,
            "notifications": [{**_row(n, "event_id"), "deliveries": by_notification.get(n.id, [])}
                              for n in notifications],
        }


def recent(limit: int) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.scalars(select(EventRow).order_by(EventRow.received_at.desc()).limit(limit))
        return [_row(e, "data", "enrichment") for e in rows]
