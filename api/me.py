"""A person's own door: ``POST /v1/sessions`` turns a one-time sign-in link into a session, and
``GET /v1/me/notifications`` lists what a signed-in person still has to act on, with the action tokens to do it.

One entry per open subject (an incident not resolved, an approval still pending), from the newest notification the
person got about it; ``actions`` maps each action offered to its token for ``POST /v1/actions`` (herald/actions.py
``tokens_for``: nothing when the person may no longer act, say a requester on their own approval).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import PersonId
from api.errors import unauthorized
from api.fields import storable
from herald import actions, db, signin
from herald.events import EVENT_TYPES
from herald.models import Approval, EventRow, Incident, Notification

log = logging.getLogger(__name__)

router = APIRouter(tags=["me"])

SCAN = 1000  # newest notifications looked at: far more than anyone has open


class Subject(BaseModel):
    type: str  # incident, approval
    id: int
    status: str
    title: str
    expires_at: datetime | None = None


class OpenNotification(BaseModel):
    notification_id: int
    event_id: uuid.UUID
    event_type: str
    summary: str
    environment: str
    created_at: datetime
    subject: Subject
    actions: dict[str, str]  # action -> token


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    link: str = Field(min_length=1, max_length=256, description="the token after #signin= in the link "
                                                                "`herald people link` printed")

    _storable = field_validator("link")(storable)


class SessionOut(BaseModel):
    token: str  # send it as Authorization: Bearer ...
    person_id: str


@router.post("/v1/sessions", status_code=201, response_model=SessionOut, summary="Exchange a sign-in link",
             responses={401: {"description": "a used, expired or unknown link"}})
def exchange_link(body: SessionIn) -> SessionOut:
    try:
        with db.session() as s:
            token = signin.exchange_link(s, body.link)
            return SessionOut(token=token, person_id=signin.person_for_bearer(s, token))
    except signin.SignInRefused as exc:
        raise unauthorized(exc.reason) from None


@router.get("/v1/me/notifications", response_model=list[OpenNotification],
            summary="My open notifications, with their actions", responses={401: {"description": "not signed in"}})
def my_notifications(person: PersonId, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[OpenNotification]:
    with db.session() as s:
        rows = s.execute(select(Notification, EventRow).join(EventRow, EventRow.id == Notification.event_id)
                         .where(Notification.person_id == person)
                         .order_by(Notification.created_at.desc(), Notification.id.desc()).limit(SCAN)).all()
        subjects = _open_subjects(s, [event for _, event in rows])
        found: list[OpenNotification] = []
        seen: set[tuple[str, int]] = set()
        for notification, event in rows:
            subject = subjects.get(event.id)
            if subject is None or (subject.type, subject.id) in seen:
                continue
            seen.add((subject.type, subject.id))
            found.append(OpenNotification(
                notification_id=notification.id, event_id=event.id, event_type=event.type,
                summary=EVENT_TYPES[event.type].summary if event.type in EVENT_TYPES else event.type,
                environment=event.environment, created_at=notification.created_at, subject=subject,
                actions=_tokens(s, notification)))
            if len(found) == limit:
                break
        return found


def _open_subjects(s: Session, events: list[EventRow]) -> dict[uuid.UUID, Subject]:
    """The open incident or pending approval each event is about, by event id (loaded in two queries)."""
    incident_ids = {e.incident_id for e in events if e.incident_id is not None}
    incidents = {i.id: i for i in s.scalars(select(Incident).where(Incident.id.in_(incident_ids),
                                                                   Incident.status != "resolved"))}
    approval_events = [e.id for e in events if e.type == "approval.requested"]
    approvals = {a.event_id: a for a in s.scalars(select(Approval).where(Approval.event_id.in_(approval_events),
                                                                         Approval.status == "pending"))}
    subjects: dict[uuid.UUID, Subject] = {}
    for event in events:
        if event.incident_id in incidents:
            incident = incidents[event.incident_id]
            subjects[event.id] = Subject(type="incident", id=incident.id, status=incident.status,
                                         title=incident.title)
        elif event.id in approvals:
            approval = approvals[event.id]
            subjects[event.id] = Subject(type="approval", id=approval.id, status=approval.status,
                                         title=f"{approval.request_kind} {approval.target}",
                                         expires_at=approval.expires_at)
    return subjects


def _tokens(s: Session, notification: Notification) -> dict[str, Any]:
    try:
        return actions.tokens_for(s, notification)
    except actions.ActionKeysMissing as exc:  # listed without tokens: the operator has keys to configure
        log.warning("no action tokens for notification %s: %s", notification.id, exc)
        return {}
