"""``GET /v1/events/{id}``, ``/v1/incidents/{id}``, ``/v1/approvals/{id}``: what herald knows, with the audit trail.

For integration code with a key of the read scope, within the key's environment: another environment's event,
incident or approval is 404, exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import ReadKey
from api.errors import ApiError
from api.fields import MAX_ID
from herald import db
from herald.models import Answer, Approval, ApprovalVote, AuditLog, EventRow, Incident, Notification

router = APIRouter(tags=["read"])

SubjectId = Annotated[int, Path(ge=1, le=MAX_ID)]


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


class AnswerEntry(BaseModel):
    id: int
    at: datetime
    action: str
    person_id: str
    via: str
    key_id: str | None
    on_behalf_of: str | None
    comment: str | None
    outcome: str
    reason: str | None


class NotificationEntry(BaseModel):
    id: int
    person_id: str
    status: str
    created_at: datetime
    first_delivered_at: datetime | None


class EventOut(BaseModel):
    id: uuid.UUID
    type: str
    source: str
    environment: str
    severity: str
    subject: str | None
    idempotency_key: str
    occurred_at: datetime
    received_at: datetime
    status: str
    data: dict[str, Any]
    incident_id: int | None
    notifications: list[NotificationEntry]


class IncidentOut(BaseModel):
    id: int
    environment: str
    title: str
    subject: str | None
    severity: str
    status: str
    assignee: str | None
    escalation_level: int
    event_count: int
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    events: list[uuid.UUID]
    answers: list[AnswerEntry]
    audit: list[AuditEntry]


class VoteEntry(BaseModel):
    person_id: str
    decision: str
    comment: str | None
    at: datetime


class ApprovalOut(BaseModel):
    id: int
    event_id: uuid.UUID
    environment: str
    request_kind: str
    target: str
    requester: str
    quorum: int
    expires_at: datetime
    status: str
    decided_at: datetime | None
    votes: list[VoteEntry]
    answers: list[AnswerEntry]
    audit: list[AuditEntry]


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "none in the key's environment"}}


@router.get("/v1/events/{event_id}", response_model=EventOut, responses=NOT_FOUND, summary="An event")
def get_event(key: ReadKey, event_id: uuid.UUID) -> EventOut:
    with db.session() as s:
        row = s.get(EventRow, event_id)
        if row is None or row.environment != key.environment:
            raise ApiError(404, f"no event {event_id} in environment {key.environment!r}")
        notifications = s.scalars(select(Notification).where(Notification.event_id == row.id)
                                  .order_by(Notification.id))
        return EventOut(id=row.id, type=row.type, source=row.source, environment=row.environment,
                        severity=row.severity, subject=row.subject, idempotency_key=row.idempotency_key,
                        occurred_at=row.occurred_at, received_at=row.received_at, status=row.status, data=row.data,
                        incident_id=row.incident_id,
                        notifications=[NotificationEntry.model_validate(n, from_attributes=True)
                                       for n in notifications])


@router.get("/v1/incidents/{incident_id}", response_model=IncidentOut, responses=NOT_FOUND,
            summary="An incident, with its answers and audit trail")
def get_incident(key: ReadKey, incident_id: SubjectId) -> IncidentOut:
    with db.session() as s:
        row = s.get(Incident, incident_id)
        if row is None or row.environment != key.environment:
            raise ApiError(404, f"no incident {incident_id} in environment {key.environment!r}")
        events = s.scalars(select(EventRow.id).where(EventRow.incident_id == row.id)
                           .order_by(EventRow.occurred_at)).all()
        return IncidentOut(id=row.id, environment=row.environment, title=row.title, subject=row.subject,
                           severity=row.severity, status=row.status, assignee=row.assignee,
                           escalation_level=row.escalation_level, event_count=row.event_count,
                           opened_at=row.opened_at, updated_at=row.updated_at, closed_at=row.closed_at,
                           events=list(events), answers=_answers(s, "incident", row.id),
                           audit=_audit(s, "incident", row.id))


@router.get("/v1/approvals/{approval_id}", response_model=ApprovalOut, responses=NOT_FOUND,
            summary="An approval, with its votes, answers and audit trail")
def get_approval(key: ReadKey, approval_id: SubjectId) -> ApprovalOut:
    with db.session() as s:
        found = s.execute(select(Approval, EventRow.environment).join(EventRow, EventRow.id == Approval.event_id)
                          .where(Approval.id == approval_id)).first()
        if found is None or found[1] != key.environment:
            raise ApiError(404, f"no approval {approval_id} in environment {key.environment!r}")
        row, environment = found
        votes = s.scalars(select(ApprovalVote).where(ApprovalVote.approval_id == row.id).order_by(ApprovalVote.id))
        return ApprovalOut(id=row.id, event_id=row.event_id, environment=environment, request_kind=row.request_kind,
                           target=row.target, requester=row.requester, quorum=row.quorum, expires_at=row.expires_at,
                           status=row.status, decided_at=row.decided_at,
                           votes=[VoteEntry.model_validate(v, from_attributes=True) for v in votes],
                           answers=_answers(s, "approval", row.id), audit=_audit(s, "approval", row.id))


def _answers(s: Session, subject_type: str, subject_id: int) -> list[AnswerEntry]:
    rows = s.scalars(select(Answer).where(Answer.subject_type == subject_type, Answer.subject_id == subject_id)
                     .order_by(Answer.id))
    return [AnswerEntry.model_validate(row, from_attributes=True) for row in rows]


def _audit(s: Session, subject_type: str, subject_id: int) -> list[AuditEntry]:
    rows = s.scalars(select(AuditLog).where(AuditLog.subject_type == subject_type,
                                            AuditLog.subject_id == str(subject_id)).order_by(AuditLog.id))
    return [AuditEntry.model_validate(row, from_attributes=True) for row in rows]
