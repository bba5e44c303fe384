"""Answers: who may answer what, decided in ONE place for every door (docs/answers.md).

Every door (an action token from a phone, the HTTP API, the producer library, the CLI) builds an
:class:`AnswerRequest` and calls :func:`apply` (an action token: :func:`apply_token`) in its own
transaction. The rules:

- the responder is a directory person: the name given is matched against people's id, email and
  aliases, case-insensitively (``BRUNO``, ``bruno@example.com`` and ``bruno`` are one person);
- the answer's environment is the subject's: an answer in ``dev`` never touches a ``prod`` incident;
- an incident answer needs the person to have been notified of one of its events (an escalation
  notifies the audience of the moment) or to be its assignee;
- an approval vote needs the person to have been asked (notified of the request), never the
  requester (compared as identities, not spellings), one vote per person, nothing once the approval
  is decided or past its expiry (a late vote closes an expired approval, as the sweep would).

An applied answer is, in the caller's transaction: its :class:`~herald.models.Answer` row, the
incident or approval change with its audit row (actor, door, API key, ``on_behalf_of``), the
write-back to the admin platform (herald/writeback.py) and the ``response.*`` event telling the others
(published through the outbox, its id on the answer row: ingest accepts a response event only when an
applied answer names it). A refusal is an answer row and an audit row with its reason, returned, never
raised, so the door commits it and answers with ``outcome.status``; it is never a dead letter.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald import actions, approvals, incidents, writeback
from herald.audit import audit
from herald.events import make_event
from herald.models import ActionTokenUse, Answer, Approval, EventRow, Notification, Person
from herald.publishing import publish
from herald.signin import resolve_identity

__all__ = ["ACTIONS", "AnswerOutcome", "AnswerRefused", "AnswerRequest", "apply", "apply_token", "names_of",
           "notified_of_approval", "notified_of_incident"]

log = logging.getLogger(__name__)

SubjectType = Literal["incident", "approval"]
Via = Literal["token", "api", "producer", "cli"]

# subject type -> action (as tokens and doors name it) -> the response event's change (``response.<change>``)
ACTIONS: dict[str, dict[str, str]] = {
    "incident": {"acknowledge": "acknowledged", "resolve": "resolved", "follow_up": "follow_up_requested"},
    "approval": {"approve": "approved", "reject": "rejected", "request_info": "info_requested"},
}
SOURCE = "herald/answers"


@dataclass(frozen=True)
class AnswerRequest:
    """One answer as a door received it; ``person`` as presented (id, email or alias, any case)."""

    subject_type: SubjectType
    subject_id: int
    action: str
    person: str
    environment: str
    via: Via
    comment: str | None = None
    assignee: str | None = None
    key_id: str | None = None  # the API key integration code answered with
    on_behalf_of: str | None = None  # the person as the integration named them
    token_id: str | None = None
    notification_id: int | None = None


@dataclass(frozen=True)
class AnswerOutcome:
    """What happened: ``status`` 200 when applied; 400/403/404/409/410 with ``reason`` when refused."""

    answer_id: int
    applied: bool
    status: int
    reason: str | None
    subject: dict[str, Any]


class AnswerRefused(Exception):
    """An answer was refused (recorded with its reason): raised by doors that raise, e.g. producers.respond."""

    def __init__(self, outcome: AnswerOutcome) -> None:
        super().__init__(f"answer refused ({outcome.status}): {outcome.reason}")
        self.outcome = outcome
        self.reason = outcome.reason or ""
        self.status = outcome.status


class _Refusal(Exception):
    """Internal: why the answer is refused, with the status the door answers."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


# --- identities ------------------------------------------------------------------------------------

def names_of(s: Session, person_id: str) -> set[str]:
    """Every name ``person_id`` goes by, normalized: id, email and aliases (herald/signin.py)."""
    return actions.names(s.get(Person, person_id), person_id)


# --- who was asked ---------------------------------------------------------------------------------

def notified_of_incident(s: Session, incident_id: int) -> list[str]:
    """The people notified of any event of the incident (its opening, a worse severity, an escalation)."""
    return list(s.scalars(select(Notification.person_id).join(EventRow, EventRow.id == Notification.event_id)
                          .where(EventRow.incident_id == incident_id).distinct().order_by(Notification.person_id)))


def notified_of_approval(s: Session, approval: Approval) -> list[str]:
    """The people asked to approve: notified of the request."""
    return list(s.scalars(select(Notification.person_id).where(Notification.event_id == approval.event_id)
                          .order_by(Notification.person_id)))


# --- the door's call -------------------------------------------------------------------------------

def apply(s: Session, request: AnswerRequest) -> AnswerOutcome:
    """Authorize and apply one answer in the caller's transaction; a refusal is recorded and returned."""
    person = resolve_identity(s, request.person)
    try:
        if request.subject_type == "incident":
            return _apply_incident(s, request, person)
        if request.subject_type == "approval":
            return _apply_approval(s, request, person)
        raise _Refusal(400, f"cannot answer a {request.subject_type!r} (incident or approval)")
    except _Refusal as refusal:
        return _refuse(s, request, person, refusal)


def apply_token(s: Session, token: str, comment: str | None = None) -> AnswerOutcome:
    """The answer an action token carries: verified, used once, then applied like any other (``via="token"``).

    Raises ``herald.actions.TokenRefused`` for a malformed, forged, expired or revoked token (nothing
    is written); a token used before is refused with 409 and changes nothing.
    """
    claims = actions.verify(token)
    try:
        with s.begin_nested():
            use = ActionTokenUse(token_id=claims.token_id, notification_id=claims.notification_id,
                                 person_id=claims.person_id, action=claims.action, outcome="refused")
            s.add(use)
    except IntegrityError:
        first = s.scalar(select(Answer.id).where(Answer.token_id == claims.token_id).order_by(Answer.id).limit(1))
        return AnswerOutcome(answer_id=first or 0, applied=False, status=409, reason="this action was already used",
                             subject={})
    notification = s.get(Notification, claims.notification_id)
    if notification is None or notification.person_id != claims.person_id:
        raise actions.TokenRefused("the token does not match its notification", 401)
    subject_type, subject_id, environment = _subject_of(s, notification)
    outcome = apply(s, AnswerRequest(
        subject_type=subject_type, subject_id=subject_id, action=claims.action, person=claims.person_id,
        environment=environment, via="token", comment=comment, token_id=claims.token_id,
        notification_id=notification.id))
    use.outcome = "applied" if outcome.applied else "refused"
    return outcome


def _subject_of(s: Session, notification: Notification) -> tuple[SubjectType, int, str]:
    """What a notification asks its person to answer: the incident of its event, or the approval it requests."""
    event = s.get_one(EventRow, notification.event_id)
    if event.type == "approval.requested":
        approval_id = s.scalar(select(Approval.id).where(Approval.event_id == event.id))
        if approval_id is not None:
            return "approval", approval_id, event.environment
    if event.incident_id is not None:
        return "incident", event.incident_id, event.environment
    raise actions.TokenRefused(f"notification {notification.id} asks for no answer", 400)


# --- incidents -------------------------------------------------------------------------------------

def _apply_incident(s: Session, request: AnswerRequest, person: str | None) -> AnswerOutcome:
    change = _change(request)
    incident = incidents.get(s, request.subject_id)
    if incident is None or incident.environment != request.environment:
        raise _Refusal(404, _missing(request))
    who = _person(request, person)
    if who not in notified_of_incident(s, incident.id) and who != incident.assignee:
        raise _Refusal(403, f"{who} was not notified of incident {incident.id}")
    if incident.status == "resolved":
        raise _Refusal(409, f"incident {incident.id} is already resolved")
    if request.action == "acknowledge" and incident.status != "open":
        raise _Refusal(409, f"incident {incident.id} is already acknowledged by {incident.assignee}")
    assignee = _assignee(s, request)
    answer = _answer(s, request, who, "applied")
    incidents.answer(s, incident, change, who, assignee=assignee, comment=request.comment,
                     event_id=str(answer.event_id), **_door(request, answer))
    state = {"type": "incident", "id": incident.id, "status": incident.status, "assignee": incident.assignee}
    kinds = [f"incident.{change}"] + (["incident.reassigned"] if change == "follow_up_requested" and assignee else [])
    for kind in kinds:
        writeback.record(s, environment=incident.environment, kind=kind, subject=f"incident:{incident.id}",
                    data={**state, "by": who, "via": request.via, "comment": request.comment,
                          "on_behalf_of": request.on_behalf_of, "answer_id": answer.id})
    return _tell(s, request, answer, who, change, state, incident_id=incident.id)


def _assignee(s: Session, request: AnswerRequest) -> str | None:
    if not request.assignee:
        return None
    assignee = resolve_identity(s, request.assignee)
    if assignee is None:
        raise _Refusal(400, f"assignee {request.assignee} is not in the directory")
    return assignee


# --- approvals -------------------------------------------------------------------------------------

def _apply_approval(s: Session, request: AnswerRequest, person: str | None) -> AnswerOutcome:
    change = _change(request)
    approval = approvals.get(s, request.subject_id)
    if approval is None or approvals.environment(s, approval) != request.environment:
        raise _Refusal(404, _missing(request))
    who = _person(request, person)
    if approval.requester.strip().casefold() in names_of(s, who) or \
            resolve_identity(s, approval.requester) == who:
        raise _Refusal(403, "the requester cannot answer their own approval")
    if who not in notified_of_approval(s, approval):
        raise _Refusal(403, f"{who} was not asked to approve approval {approval.id}")
    if approvals.close_expired(s, approval):
        raise _Refusal(410, f"approval {approval.id} expired")
    if approval.status != "pending":
        raise _Refusal(409, f"approval {approval.id} is already {approval.status}")
    if approvals.voted(s, approval, who):
        raise _Refusal(409, f"{who} already answered approval {approval.id}")
    with s.begin_nested():  # a vote refused after all (a race of the same person's two votes) keeps no row
        answer = _answer(s, request, who, "applied")
        refused = approvals.vote(s, approval, who, request.action, comment=request.comment,
                                 event_id=str(answer.event_id), **_door(request, answer))
        if refused:
            raise _Refusal(409, refused)
    counted = approvals.counts(s, approval)
    state = {"type": "approval", "id": approval.id, "status": approval.status, "target": approval.target,
             "quorum": approval.quorum, "approvals": counted["approve"], "rejections": counted["reject"]}
    kind = {"approved": "approval.approved", "rejected": "approval.rejected"}.get(approval.status)
    if change == "info_requested":
        kind = "approval.info_requested"
    if kind is not None:  # a vote that decides nothing yet is not news for the admin platform
        writeback.record(s, environment=request.environment, kind=kind, subject=f"approval:{approval.id}",
                    data={**state, "by": who, "via": request.via, "comment": request.comment,
                          "on_behalf_of": request.on_behalf_of, "answer_id": answer.id})
    return _tell(s, request, answer, who, change, state, approval_id=approval.id)


# --- common steps ----------------------------------------------------------------------------------

def _change(request: AnswerRequest) -> str:
    change = ACTIONS.get(request.subject_type, {}).get(request.action)
    if change is None:
        known = ", ".join(ACTIONS.get(request.subject_type, {}))
        raise _Refusal(400, f"{request.action!r} does not apply to an {request.subject_type} (known: {known})")
    return change


def _missing(request: AnswerRequest) -> str:
    return f"{request.subject_type} {request.subject_id} does not exist in {request.environment}"


def _person(request: AnswerRequest, person: str | None) -> str:
    if person is None:
        raise _Refusal(403, f"{request.person} is not in the directory")
    return person


def _door(request: AnswerRequest, answer: Answer) -> dict[str, Any]:
    """What the audit row keeps of the door: how the answer came, with which key, for whom."""
    door: dict[str, Any] = {"via": request.via, "answer_id": answer.id}
    for field in ("key_id", "on_behalf_of", "token_id"):
        if getattr(request, field):
            door[field] = getattr(request, field)
    return door


def _answer(s: Session, request: AnswerRequest, person: str, outcome: str, reason: str | None = None) -> Answer:
    answer = Answer(environment=request.environment[:32], subject_type=request.subject_type[:16],
                    subject_id=request.subject_id if 0 < request.subject_id < 2**63 else 0,
                    action=request.action[:32], person_id=person[:64], via=request.via, key_id=request.key_id,
                    on_behalf_of=request.on_behalf_of, token_id=request.token_id, comment=request.comment,
                    outcome=outcome, reason=reason[:255] if reason else None,
                    event_id=uuid.uuid4() if outcome == "applied" else None)
    s.add(answer)
    s.flush()
    return answer


def _refuse(s: Session, request: AnswerRequest, person: str | None, refusal: _Refusal) -> AnswerOutcome:
    """Record the refusal (answer row and audit row) and return it; the door commits and answers 4xx."""
    answer = _answer(s, request, person or request.person, "refused", refusal.reason)
    action = f"{request.subject_type}.{request.action}.refused"
    audit(s, person or request.person[:128], action[:64], request.subject_type, request.subject_id,
          reason=refusal.reason, **_door(request, answer))
    log.warning("answer %s refused (%s): %s", answer.id, refusal.status, refusal.reason,
                extra={"answer_id": answer.id})
    return AnswerOutcome(answer_id=answer.id, applied=False, status=refusal.status, reason=refusal.reason,
                         subject={"type": request.subject_type, "id": request.subject_id})


def _tell(s: Session, request: AnswerRequest, answer: Answer, who: str, change: str, state: dict[str, Any],
          **subject: int) -> AnswerOutcome:
    """Publish the response event (through the outbox, in this transaction): it tells the others."""
    person = s.get(Person, who)
    data: dict[str, Any] = {"responder": who, "responder_name": person.name if person else who, **subject,
                            "comment": request.comment, "status": state["status"]}
    if state.get("assignee"):
        data["assignee"] = state["assignee"]
    if state["type"] == "approval":
        data.update(quorum=state["quorum"], approvals=state["approvals"])
    assert answer.event_id is not None
    event = make_event(f"response.{change}", {k: v for k, v in data.items() if v is not None},
                       environment=request.environment, source=SOURCE, id=answer.event_id,
                       idempotency_key=f"answer:{answer.id}")
    publish(event, session=s)
    log.info("answer %s applied: %s %s %s", answer.id, who, change, f"{state['type']} {state['id']}",
             extra={"answer_id": answer.id, "event_id": str(event.id)})
    return AnswerOutcome(answer_id=answer.id, applied=True, status=200, reason=None, subject=state)



