"""The retention purge: delete what is older than its configured age, in bounded batches.

- events (HERALD_RETAIN_EVENTS_DAYS) with their notifications, deliveries, attempts, approvals and votes;
  an event is kept while one of its deliveries is not terminal, whatever its age;
- delivery attempts (HERALD_RETAIN_ATTEMPTS_DAYS), usually kept shorter than the events;
- audit rows (HERALD_RETAIN_AUDIT_DAYS);
- plumbing (HERALD_RETAIN_SWEEP_DAYS): ingested outbox rows, replayed dead letters, finished timed work,
  resolved incidents no event points to any more.

Batches of ``BATCH`` keep each statement's locks short; the purge runs under its sweep lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.orm import Session

from herald.models import (
    TERMINAL_DELIVERY,
    Approval,
    ApprovalVote,
    AuditLog,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    DueWork,
    EventRow,
    Incident,
    Notification,
    Outbox,
    utcnow,
)
from herald.settings import get_settings
from schedules.runs import Summary, run_exclusive

SWEEP = "purge"
BATCH = 5000


def _days(days: float, now: datetime) -> datetime:
    return now - timedelta(days=days)


def _delete_batch(s: Session, model: Any, ids: Select[Any]) -> int:
    chosen = [row[0] for row in s.execute(ids.limit(BATCH))]
    if chosen:
        s.execute(delete(model).where(model.id.in_(chosen)))
    return len(chosen)


def purge_events(s: Session, cutoff: datetime) -> int:
    """Old events and everything hanging off them, children first (the foreign keys say so)."""
    busy = exists().where(Delivery.event_id == EventRow.id, Delivery.status.not_in(TERMINAL_DELIVERY))
    ids = [row[0] for row in s.execute(select(EventRow.id).where(EventRow.received_at < cutoff, ~busy).limit(BATCH))]
    if not ids:
        return 0
    deliveries = select(Delivery.id).where(Delivery.event_id.in_(ids))
    s.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries)))
    s.execute(delete(Delivery).where(Delivery.event_id.in_(ids)))
    s.execute(delete(Notification).where(Notification.event_id.in_(ids)))
    approvals = select(Approval.id).where(Approval.event_id.in_(ids))
    s.execute(delete(ApprovalVote).where(ApprovalVote.approval_id.in_(approvals)))
    s.execute(delete(Approval).where(Approval.event_id.in_(ids)))
    s.execute(delete(EventRow).where(EventRow.id.in_(ids)))
    return len(ids)


def _purge(s: Session, now: datetime) -> Summary:
    settings = get_settings()
    counts: dict[str, int] = {}
    counts["events"] = purge_events(s, _days(settings.retain_events_days, now))
    counts["delivery_attempts"] = _delete_batch(s, DeliveryAttempt, select(DeliveryAttempt.id).where(
        DeliveryAttempt.at < _days(settings.retain_attempts_days, now)))
    counts["audit_log"] = _delete_batch(s, AuditLog, select(AuditLog.id).where(
        AuditLog.at < _days(settings.retain_audit_days, now)))
    plumbing = _days(settings.retain_sweep_days, now)
    counts["outbox"] = _delete_batch(s, Outbox, select(Outbox.id).where(Outbox.ingested_at < plumbing))
    counts["dead_letters"] = _delete_batch(s, DeadLetter, select(DeadLetter.id).where(
        DeadLetter.replayed_at < plumbing))
    counts["due_work"] = _delete_batch(s, DueWork, select(DueWork.id).where(
        DueWork.state != "due", DueWork.done_at < plumbing))
    counts["incidents"] = _delete_batch(s, Incident, select(Incident.id).where(
        Incident.status == "resolved", Incident.closed_at < plumbing,
        ~exists().where(EventRow.incident_id == Incident.id)))
    return counts


def purge(now: datetime | None = None, *, min_gap_s: float = 0.0) -> Summary | None:
    """Run one purge pass (None when another copy holds the lock). ``now`` simulates the date."""
    return run_exclusive(SWEEP, lambda s: _purge(s, now or utcnow()), min_gap_s=min_gap_s)
