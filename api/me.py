"""A person's own door: ``POST /v1/sessions`` turns a one-time sign-in link into a session,
``GET /v1/me`` says who is signed in, ``GET /v1/me/notifications`` lists what a signed-in person still has to act
on, with the action tokens to do it, and ``GET /v1/me/answers`` what they answered.

One entry per open subject (an incident not resolved, an approval still pending), from the newest notification the
person got about it; ``actions`` maps each action offered to its token for ``POST /v1/actions`` (herald/actions.py
``tokens_for``: nothing when the person may no longer act, say a requester on their own approval). Credential and
operations notices, which ask for no answer, are listed while recent (``NOTICE_DAYS``) and not cleared since.
Everything here is the caller's own: rows are selected by the signed-in person's id, never by a parameter.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import PersonId
from api.errors import unauthorized
from api.fields import storable
from herald import actions, approvals, db, payload, signin
from herald.events import EVENT_TYPES
from herald.models import Answer, Approval, ApprovalVote, EventRow, Incident, Notification, Person, utcnow

log = logging.getLogger(__name__)

router = APIRouter(tags=["me"])

SCAN = 1000  # newest notifications looked at: far more than anyone has open
NOTICE_DAYS = 7  # a credential or operations notice stays listed this long, unless cleared
NOTICE_FLOWS = ("credential", "operations")


class Vote(BaseModel):
    person_id: str
    decision: str  # approve, reject, request_info
    at: datetime


class Subject(BaseModel):
    type: str  # incident, approval, notice
    id: int  # the incident's or approval's id; a notice's notification id
    status: str  # incident: open, acknowledged; approval: pending; notice: its severity
    title: str
    expires_at: datetime | None = None
    severity: str | None = None
    # incidents
    assignee: str | None = None
    escalation_step: int | None = None  # how many times it escalated (0: still with the first people paged)
    # approvals: the votes so far against the quorum
    requester: str | None = None
    quorum: int | None = None
    approvals: int | None = None
    rejections: int | None = None
    votes: list[Vote] = Field(default_factory=list)
    my_vote: str | None = None  # the caller's own decision: they have no vote left (and no tokens)


class OpenNotification(BaseModel):
    notification_id: int  # the newest of the person's notifications about the subject
    notification_ids: list[int]  # all of them, newest first (a push's #n= may name an older one)
    event_id: uuid.UUID
    event_type: str
    summary: str
    body: str  # what the push said (herald/payload.py render), or the summary when it cannot be rendered
    environment: str
    created_at: datetime
    subject: Subject
    actions: dict[str, str]  # action -> token


class Me(BaseModel):
    person_id: str
    name: str


class MyAnswer(BaseModel):
    id: int
    at: datetime
    environment: str
    subject_type: str  # incident, approval
    subject_id: int
    subject_title: str | None  # None: the subject is gone
    subject_status: str | None
    action: str
    outcome: str  # applied, refused
    reason: str | None  # why it was refused
    comment: str | None
    via: str  # token, api, producer, cli


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


@router.get("/v1/me", response_model=Me, summary="Who is signed in",
            responses={401: {"description": "not signed in"}})
def whoami(person: PersonId) -> Me:
    with db.session() as s:
        row = s.get(Person, person)
        return Me(person_id=person, name=row.name if row is not None else person)


@router.get("/v1/me/answers", response_model=list[MyAnswer], summary="What I answered, newest first",
            responses={401: {"description": "not signed in"}})
def my_answers(person: PersonId, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[MyAnswer]:
    with db.session() as s:
        rows = list(s.scalars(select(Answer).where(Answer.person_id == person)
                              .order_by(Answer.at.desc(), Answer.id.desc()).limit(limit)))
        incidents = {i.id: i for i in s.scalars(select(Incident).where(Incident.id.in_(
            {a.subject_id for a in rows if a.subject_type == "incident"})))}
        approved = {a.id: a for a in s.scalars(select(Approval).where(Approval.id.in_(
            {a.subject_id for a in rows if a.subject_type == "approval"})))}
        found = []
        for a in rows:
            title, status = None, None
            if a.subject_type == "incident" and a.subject_id in incidents:
                title, status = incidents[a.subject_id].title, incidents[a.subject_id].status
            elif a.subject_type == "approval" and a.subject_id in approved:
                row = approved[a.subject_id]
                title, status = f"{row.request_kind} {row.target}", row.status
            found.append(MyAnswer(id=a.id, at=a.at, environment=a.environment, subject_type=a.subject_type,
                                  subject_id=a.subject_id, subject_title=title, subject_status=status,
                                  action=a.action, outcome=a.outcome, reason=a.reason, comment=a.comment,
                                  via=a.via))
        return found


@router.get("/v1/me/notifications", response_model=list[OpenNotification],
            summary="My open notifications, with their actions", responses={401: {"description": "not signed in"}})
def my_notifications(person: PersonId, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[OpenNotification]:
    with db.session() as s:
        rows = s.execute(select(Notification, EventRow).join(EventRow, EventRow.id == Notification.event_id)
                         .where(Notification.person_id == person)
                         .order_by(Notification.created_at.desc(), Notification.id.desc()).limit(SCAN)).all()
        subjects = _open_subjects(s, [event for _, event in rows], person)
        found: dict[tuple[str, Any], OpenNotification] = {}
        seen: set[tuple[str, Any]] = set()
        since = utcnow() - timedelta(days=NOTICE_DAYS)
        for notification, event in rows:
            subject = subjects.get(event.id)
            if subject is None and event.flow in NOTICE_FLOWS and event.incident_id is None:
                key: tuple[str, Any] = ("notice", _notice_key(event))
                if key in seen:
                    continue
                seen.add(key)  # the newest of its kind decides: a cleared condition is no longer listed
                if notification.created_at < since or event.type.endswith("_cleared") or len(found) == limit:
                    continue
                subject = Subject(type="notice", id=notification.id, status=event.severity, severity=event.severity,
                                  title=_notice_title(event))
            elif subject is None:
                continue
            key = (subject.type, subject.id)
            listed = found.get(key)
            if listed is not None:  # an older notification of the same subject
                listed.notification_ids.append(notification.id)
                if not listed.actions and not subject.my_vote:
                    # the newest may offer nothing (a response telling the others): an older one's tokens then
                    listed.actions = _tokens(s, notification)
                continue
            if len(found) == limit:
                continue
            found[key] = OpenNotification(
                notification_id=notification.id, notification_ids=[notification.id], event_id=event.id,
                event_type=event.type,
                summary=EVENT_TYPES[event.type].summary if event.type in EVENT_TYPES else event.type,
                body=_body(event, notification),
                environment=event.environment, created_at=notification.created_at, subject=subject,
                actions={} if subject.my_vote else _tokens(s, notification))
        return list(found.values())


def _open_subjects(s: Session, events: list[EventRow], person: str) -> dict[uuid.UUID, Subject]:
    """The open incident or pending approval each event is about, by event id (loaded in two queries)."""
    incident_ids = {e.incident_id for e in events if e.incident_id is not None}
    incidents = {i.id: i for i in s.scalars(select(Incident).where(Incident.id.in_(incident_ids),
                                                                   Incident.status != "resolved"))}
    approval_events = [e.id for e in events if e.type == "approval.requested"]
    pending = {a.event_id: a for a in s.scalars(select(Approval).where(Approval.event_id.in_(approval_events),
                                                                         Approval.status == "pending"))}
    subjects: dict[uuid.UUID, Subject] = {}
    for event in events:
        if event.incident_id in incidents:
            incident = incidents[event.incident_id]
            subjects[event.id] = Subject(type="incident", id=incident.id, status=incident.status,
                                         title=incident.title, severity=incident.severity,
                                         assignee=incident.assignee, escalation_step=incident.escalation_level)
        elif event.id in pending:
            approval = pending[event.id]
            counted = approvals.counts(s, approval)
            votes = [Vote(person_id=v.person_id, decision=v.decision, at=v.at) for v in s.scalars(
                select(ApprovalVote).where(ApprovalVote.approval_id == approval.id).order_by(ApprovalVote.id))]
            subjects[event.id] = Subject(type="approval", id=approval.id, status=approval.status,
                                         title=f"{approval.request_kind} {approval.target}",
                                         expires_at=approval.expires_at, severity=event.severity,
                                         requester=approval.requester, quorum=approval.quorum,
                                         approvals=counted["approve"], rejections=counted["reject"], votes=votes,
                                         my_vote=next((v.decision for v in votes if v.person_id == person), None))
    return subjects


def _body(event: EventRow, notification: Notification) -> str:
    try:
        return payload.render(event_id=str(event.id), event_type=event.type, flow=event.flow,
                              environment=event.environment, severity=event.severity, data=event.data or {},
                              notification_id=notification.id, ids_only=notification.ids_only,
                              enrichment=event.enrichment)[1]
    except (KeyError, ValueError, TypeError, AttributeError):  # an event older than today's wording
        return EVENT_TYPES[event.type].summary if event.type in EVENT_TYPES else event.type


def _notice_key(event: EventRow) -> str:
    """What a notice is about: a condition and its clearing share one key (``ops.queue_backlog`` and
    ``ops.queue_backlog_cleared`` on one queue)."""
    kind = event.type.removesuffix("_cleared")
    return f"{event.environment}:{kind}:{_notice_name(event) or event.id}"


def _notice_name(event: EventRow) -> str | None:
    data = event.data or {}
    return next((str(data[k]) for k in ("credential", "resource") if data.get(k)), None) or event.subject


def _notice_title(event: EventRow) -> str:
    name = _notice_name(event)
    summary = EVENT_TYPES[event.type].summary if event.type in EVENT_TYPES else event.type
    return f"{summary}: {name}" if name else summary


def _tokens(s: Session, notification: Notification) -> dict[str, Any]:
    try:
        return actions.tokens_for(s, notification)
    except actions.ActionKeysMissing as exc:  # listed without tokens: the operator has keys to configure
        log.warning("no action tokens for notification %s: %s", notification.id, exc)
        return {}
