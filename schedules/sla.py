"""Per flow, from Postgres: time from event to first delivery, and events pending past their SLA.

An event is pending while it has not gone through resolve, or while one of its notifications
has a delivery still on its way and nothing delivered yet. One pending longer than its flow's
SLA (``HERALD_SLA_S``, default ``HERALD_SLA_DEFAULT_S``) is a breach.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from herald.events import Flow
from herald.models import TERMINAL_DELIVERY, Delivery, EventRow, Notification
from herald.settings import get_settings

# Answers are written back, not delivered: they have no SLA of their own.
FLOWS = tuple(f.value for f in Flow if f is not Flow.response)


def sla_s(flow: str) -> float:
    settings = get_settings()
    return float(settings.sla_s.get(flow, settings.sla_default_s))


def pending_past_sla(s: Session, flow: str, now: datetime) -> int:
    settings = get_settings()
    since = now - timedelta(seconds=settings.sla_lookback_s)
    deadline = now - timedelta(seconds=sla_s(flow))
    undelivered = exists().where(
        Notification.event_id == EventRow.id, Notification.first_delivered_at.is_(None),
        exists().where(Delivery.notification_id == Notification.id, Delivery.status.not_in(TERMINAL_DELIVERY)))
    query = (select(func.count()).select_from(EventRow)
             .where(EventRow.flow == flow, EventRow.received_at >= since, EventRow.received_at < deadline,
                    or_(EventRow.status.in_(("received", "enriched", "resolving")),
                        and_(EventRow.status == "resolved", undelivered))))
    return int(s.scalar(query) or 0)


def time_to_first_delivery(s: Session, flow: str, now: datetime, window_s: float) -> dict[str, Any]:
    """Slowest and median seconds from receipt to first delivery, for events first delivered lately."""
    since = now - timedelta(seconds=window_s)
    firsts = (select(EventRow.received_at, func.min(Notification.first_delivered_at).label("first"))
              .join(Notification, Notification.event_id == EventRow.id)
              .where(EventRow.flow == flow, Notification.first_delivered_at >= since)
              .group_by(EventRow.id, EventRow.received_at))
    waits = sorted((first - received).total_seconds() for received, first in s.execute(firsts) if first is not None)
    if not waits:
        return {"delivered": 0}
    return {"delivered": len(waits), "median_s": round(waits[len(waits) // 2], 3), "max_s": round(waits[-1], 3)}
