"""Who may answer what (herald/answers.py), on an in-memory database: every forged answer of issue 10 is refused.

Given a small directory (bruno requests, dana and emil approve, chen is on call, fatima is in the
directory but was asked nothing, mallory is nobody), the answers as a door hands them to
:func:`herald.answers.apply`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Literal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import actions, answers, approvals
from herald.answers import AnswerOutcome, AnswerRequest
from herald.flows import FLOWS
from herald.models import (
    ActionTokenUse,
    Answer,
    Approval,
    ApprovalVote,
    AuditLog,
    DueWork,
    EventRow,
    Incident,
    Notification,
    Outbox,
    Person,
    WebhookEndpoint,
    WebhookMessage,
    utcnow,
)
from schedules.approvals import close_expired
from tests.unit.domain_helpers import memory_session, stored_event
from workers.enrich import describe

PEOPLE = [("bruno", "bruno@example.com", ["b.silva"]), ("dana", "dana@example.com", []),
          ("emil", "emil@example.com", []), ("chen", "chen@example.com", ["cwei"]),
          ("fatima", "fatima@example.com", [])]


@pytest.fixture
def s() -> Iterator[Session]:
    with memory_session() as session:
        for pid, email, aliases in PEOPLE:
            session.add(Person(id=pid, name=pid.capitalize(), email=email, aliases=aliases))
        session.add(WebhookEndpoint(id="admin", environment="prod", url="https://admin.example/hooks",
                                    secret_ref="env:ADMIN_WEBHOOK_SECRET", kinds=["incident.*", "approval.*"]))
        session.flush()
        yield session


def ingest(s: Session, type: str, data: dict[str, Any], **fields: Any) -> tuple[str, EventRow]:
    row = stored_event(s, type, data, **fields)
    return FLOWS[row.flow].ingest(s, row), row


def notify(s: Session, event: EventRow, *people: str) -> None:
    """What resolve would have written: these people were notified of the event."""
    for person in people:
        s.add(Notification(event_id=event.id, person_id=person, route="r", reason="test"))
    s.flush()


def requested(s: Session, *, quorum: int = 2, requester: str = "bruno",
              expires_in: timedelta = timedelta(hours=4)) -> Approval:
    _, row = ingest(s, "approval.requested", {"request_kind": "api", "target": "orders-api", "requester": requester,
                                              "quorum": quorum, "expires_at": (utcnow() + expires_in).isoformat()})
    notify(s, row, "dana", "emil")
    return s.scalars(select(Approval).where(Approval.event_id == row.id)).one()


def failing(s: Session, flow: str = "orders-to-erp", **data: Any) -> Incident:
    _, row = ingest(s, "flow.failed", {"flow": flow, **data})
    notify(s, row, "chen")
    assert row.incident_id is not None
    return s.get_one(Incident, row.incident_id)


def answer(s: Session, subject: Incident | Approval, action: str, person: str, *, environment: str = "prod",
           **fields: Any) -> AnswerOutcome:
    kind: Literal["incident", "approval"] = "incident" if isinstance(subject, Incident) else "approval"
    return answers.apply(s, AnswerRequest(subject_type=kind, subject_id=subject.id, action=action, person=person,
                                          environment=environment, via="api", **fields))


def refused(outcome: AnswerOutcome) -> tuple[int, str | None]:
    assert not outcome.applied
    return outcome.status, outcome.reason


def votes(s: Session, approval: Approval) -> list[tuple[str, str]]:
    s.flush()
    return [(v.person_id, v.decision) for v in s.scalars(
        select(ApprovalVote).where(ApprovalVote.approval_id == approval.id).order_by(ApprovalVote.id))]


# --- the forged answers of issue 10 -----------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["bruno", "BRUNO", "bruno@example.com", "Bruno@Example.COM", "B.Silva"])
def test_the_requester_cannot_approve_their_own_request_under_any_spelling(s: Session, spelling: str) -> None:
    approval = requested(s, quorum=1)
    notify(s, s.get_one(EventRow, approval.event_id), "bruno")  # even had they been notified by mistake
    assert refused(answer(s, approval, "approve", spelling)) == (403, "the requester cannot answer their own approval")
    assert approval.status == "pending" and votes(s, approval) == []


def test_a_request_under_another_spelling_of_the_requester_is_still_theirs(s: Session) -> None:
    approval = requested(s, quorum=1, requester="BRUNO@example.com")
    notify(s, s.get_one(EventRow, approval.event_id), "bruno")
    assert refused(answer(s, approval, "approve", "bruno"))[0] == 403


def test_someone_who_was_not_asked_cannot_vote(s: Session) -> None:
    approval = requested(s)
    assert refused(answer(s, approval, "approve", "fatima")) == (
        403, f"fatima was not asked to approve approval {approval.id}")
    assert votes(s, approval) == []


def test_one_person_under_two_spellings_votes_once(s: Session) -> None:
    approval = requested(s, quorum=2)
    assert answer(s, approval, "approve", "emil").applied
    assert refused(answer(s, approval, "approve", "Emil")) == (409, f"emil already answered approval {approval.id}")
    assert refused(answer(s, approval, "approve", "EMIL@example.com"))[0] == 409
    assert votes(s, approval) == [("emil", "approve")] and approval.status == "pending"


def test_nobody_outside_the_directory_answers(s: Session) -> None:
    approval = requested(s, quorum=1)
    incident = failing(s)
    assert refused(answer(s, approval, "approve", "mallory")) == (403, "mallory is not in the directory")
    assert refused(answer(s, incident, "acknowledge", "mallory")) == (403, "mallory is not in the directory")
    assert approval.status == "pending" and incident.status == "open"


def test_an_answer_from_another_environment_never_touches_a_prod_incident(s: Session) -> None:
    incident = failing(s)
    assert refused(answer(s, incident, "acknowledge", "chen", environment="dev")) == (
        404, f"incident {incident.id} does not exist in dev")
    assert refused(answer(s, incident, "acknowledge", "mallory", environment="dev"))[0] == 404
    s.flush()
    # still open, still escalating
    assert (incident.status, incident.assignee) == ("open", None) and incident.next_escalation_at is not None
    assert [d.state for d in s.scalars(select(DueWork))] == ["due"]


def test_an_approval_of_another_environment_is_not_there(s: Session) -> None:
    approval = requested(s, quorum=1)
    assert refused(answer(s, approval, "approve", "dana", environment="dev"))[0] == 404
    assert approval.status == "pending"


def test_only_people_notified_of_an_incident_answer_it(s: Session) -> None:
    incident = failing(s)
    assert refused(answer(s, incident, "acknowledge", "fatima")) == (
        403, f"fatima was not notified of incident {incident.id}")
    assert answer(s, incident, "acknowledge", "CWEI").applied  # chen, by an alias
    assert (incident.status, incident.assignee) == ("acknowledged", "chen")


def test_a_recovery_of_another_flow_carrying_an_incidents_dedup_key_closes_nothing(s: Session) -> None:
    incident = failing(s, "orders-to-erp", dedup_key="erp-outage")
    _, other = ingest(s, "flow.recovered", {"flow": "invoices-to-bank", "dedup_key": "erp-outage"})
    assert incident.status == "open" and other.incident_id is None
    _, dev = ingest(s, "flow.recovered", {"flow": "orders-to-erp", "dedup_key": "erp-outage"}, environment="dev")
    assert incident.status == "open" and dev.incident_id is None
    _, own = ingest(s, "flow.recovered", {"flow": "orders-to-erp", "dedup_key": "erp-outage"})
    assert incident.status == "resolved" and own.incident_id == incident.id


def test_a_response_event_no_door_applied_is_refused_at_ingest(s: Session) -> None:
    # given an open incident, and a response event sent straight to ingest (Flower, herald publish)
    incident = failing(s)
    status, forged = ingest(s, "response.acknowledged", {"responder": "chen", "incident_id": incident.id})
    # then it is refused, audited, and the incident is untouched
    assert status == "refused" and forged.status == "refused"
    assert "answers come only through a door" in forged.enrichment["refused"]  # type: ignore[index]
    assert incident.status == "open" and incident.assignee is None
    s.flush()
    assert s.scalars(select(AuditLog.action).order_by(AuditLog.id.desc())).first() == "response.acknowledged.refused"


def test_a_response_event_copying_an_applied_answers_id_but_not_its_content_is_refused(s: Session) -> None:
    incident = failing(s)
    real = answer(s, incident, "acknowledge", "chen")
    event_id = s.get_one(Answer, real.answer_id).event_id
    forged = stored_event(s, "response.resolved", {"responder": "chen", "incident_id": incident.id},
                          id=event_id, idempotency_key="forged")
    assert FLOWS["response"].ingest(s, forged) == "refused"
    assert incident.status == "acknowledged"


# --- what an applied answer and a refusal leave -----------------------------------------------------

def test_an_applied_answer_is_recorded_written_back_and_tells_the_others(s: Session) -> None:
    incident = failing(s)
    outcome = answer(s, incident, "acknowledge", "chen", comment="on it", key_id="k1", on_behalf_of="cwei")
    assert (outcome.applied, outcome.status, outcome.subject["status"]) == (True, 200, "acknowledged")
    row = s.get_one(Answer, outcome.answer_id)
    assert (row.person_id, row.via, row.key_id, row.on_behalf_of, row.outcome) == ("chen", "api", "k1", "cwei",
                                                                                   "applied")
    audit = s.scalars(select(AuditLog).where(AuditLog.action == "incident.acknowledged")).one()
    assert audit.actor == "chen" and audit.details["via"] == "api" and audit.details["key_id"] == "k1"
    assert audit.details["on_behalf_of"] == "cwei" and audit.details["answer_id"] == row.id
    [message] = s.scalars(select(WebhookMessage)).all()
    assert (message.kind, message.subject) == ("incident.acknowledged", f"incident:{incident.id}")
    # the response event, in the outbox of this transaction, is what ingest will accept
    envelope = s.get_one(Outbox, row.event_id).envelope
    assert envelope["type"] == "response.acknowledged" and envelope["data"]["responder"] == "chen"
    status, told = ingest(s, "response.acknowledged", envelope["data"], id=row.event_id,
                          idempotency_key=envelope["idempotency_key"], source=envelope["source"])
    assert status == "received" and told.incident_id == incident.id
    assert told.dedup_key == incident.dedup_key  # replaces the page (same collapse key)


def test_a_refusal_is_an_answer_row_and_an_audit_row_never_an_error(s: Session) -> None:
    outcome = answers.apply(s, AnswerRequest(subject_type="incident", subject_id=42, action="acknowledge",
                                             person="chen", environment="prod", via="producer", key_id="k1",
                                             on_behalf_of="chen"))
    assert refused(outcome) == (404, "incident 42 does not exist in prod")
    row = s.get_one(Answer, outcome.answer_id)
    assert (row.outcome, row.reason, row.event_id) == ("refused", "incident 42 does not exist in prod", None)
    audit = s.scalars(select(AuditLog)).one()
    assert (audit.action, audit.details["reason"], audit.details["key_id"]) == (
        "incident.acknowledge.refused", "incident 42 does not exist in prod", "k1")
    assert s.scalars(select(Outbox)).all() == []  # nobody is told of a refusal


def test_an_action_that_does_not_fit_its_subject_is_refused(s: Session) -> None:
    incident = failing(s)
    assert refused(answer(s, incident, "approve", "chen"))[0] == 400
    assert incident.status == "open"


# --- approvals finish on time -----------------------------------------------------------------------

def test_a_late_vote_closes_the_expired_approval_and_is_refused(s: Session) -> None:
    approval = requested(s, expires_in=timedelta(hours=-1))
    assert refused(answer(s, approval, "approve", "dana")) == (410, f"approval {approval.id} expired")
    assert approval.status == "expired"
    kinds = [m.kind for m in s.scalars(select(WebhookMessage))]
    assert kinds == ["approval.expired"]
    assert [o.envelope["type"] for o in s.scalars(select(Outbox))] == ["approval.expired"]


def test_the_sweep_closes_expired_approvals_once_and_fails_closed(s: Session) -> None:
    late = requested(s, quorum=2, expires_in=timedelta(minutes=-1))
    answer(s, late, "approve", "dana")  # refused: expired already; closes it
    soon = requested(s, quorum=2, expires_in=timedelta(minutes=5))
    assert answer(s, soon, "approve", "dana").applied  # one of two
    assert close_expired(s, utcnow()) == {"expired": 0}  # late is closed already, soon not yet due
    assert close_expired(s, utcnow() + timedelta(minutes=6)) == {"expired": 1}
    assert soon.status == "expired"  # one approval of two: never approved
    assert close_expired(s, utcnow() + timedelta(minutes=7)) == {"expired": 0}
    assert [m.kind for m in s.scalars(select(WebhookMessage).order_by(WebhookMessage.id))] == [
        "approval.expired", "approval.expired"]
    [expired] = [o.envelope for o in s.scalars(select(Outbox))
                 if o.envelope["type"] == "approval.expired" and o.envelope["data"]["approval_id"] == soon.id]
    assert expired["data"]["approvals"] == 1 and expired["data"]["quorum"] == 2


def test_the_requester_hears_the_decision_not_each_vote_and_nobody_their_own_answer(s: Session) -> None:
    approval = requested(s, quorum=2)
    first = answer(s, approval, "approve", "dana")
    second = answer(s, approval, "approve", "emil")
    assert approval.status == "approved" and second.subject["approvals"] == 2

    def told(outcome: AnswerOutcome) -> tuple[EventRow, dict[str, Any]]:
        envelope = s.get_one(Outbox, s.get_one(Answer, outcome.answer_id).event_id).envelope
        _, row = ingest(s, envelope["type"], envelope["data"], id=envelope["id"],
                        idempotency_key=envelope["idempotency_key"], source=envelope["source"])
        return row, describe(s, row)

    vote, heard = told(first)
    assert heard["tell"] == {} and set(heard["silence"]) == {"dana", "bruno"}  # a vote: nobody's call replaced
    assert vote.dedup_key is None
    decision, heard = told(second)
    # the decision: the requester hears it, dana's request is replaced, emil gets no echo of his own vote
    assert heard["tell"] == {"bruno": f"requester of approval #{approval.id}",
                             "dana": f"asked to approve approval #{approval.id}"}
    assert "emil" in heard["silence"]
    request = s.get_one(EventRow, approval.event_id)
    assert decision.dedup_key == request.dedup_key == f"approval:{approval.id}"  # same collapse key


def test_an_acknowledgement_replaces_the_others_page_and_not_the_responders(s: Session) -> None:
    incident = failing(s)
    notify(s, s.scalars(select(EventRow).where(EventRow.incident_id == incident.id)).one(), "bruno")
    outcome = answer(s, incident, "acknowledge", "chen")
    envelope = s.get_one(Outbox, s.get_one(Answer, outcome.answer_id).event_id).envelope
    _, row = ingest(s, envelope["type"], envelope["data"], id=envelope["id"],
                    idempotency_key=envelope["idempotency_key"], source=envelope["source"])
    heard = describe(s, row)
    assert heard["tell"] == {"bruno": f"notified of incident #{incident.id}"} and heard["silence"] == ["chen"]


def test_approvals_vote_counts_per_decision(s: Session) -> None:
    approval = requested(s, quorum=3)
    answer(s, approval, "approve", "dana")
    answer(s, approval, "request_info", "emil")
    assert approvals.counts(s, approval) == {"approve": 1, "reject": 0, "request_info": 1}


# --- the action token door --------------------------------------------------------------------------

def test_an_action_token_answers_once_as_its_person(s: Session) -> None:
    incident = failing(s)
    page = s.scalars(select(Notification).where(Notification.person_id == "chen")).one()
    token = actions.tokens_for(s, page)["acknowledge"]
    first = answers.apply_token(s, token, comment="on it")
    assert first.applied and (incident.status, incident.assignee) == ("acknowledged", "chen")
    row = s.get_one(Answer, first.answer_id)
    assert (row.via, row.person_id, row.token_id, row.comment) == ("token", "chen", f"{page.id}:acknowledge", "on it")
    # the same token again: refused as used, and nothing more is written
    answers_before = len(s.scalars(select(Answer)).all())
    again = answers.apply_token(s, token)
    assert (again.applied, again.status, again.answer_id) == (False, 409, first.answer_id)
    assert len(s.scalars(select(Answer)).all()) == answers_before
    assert [u.outcome for u in s.scalars(select(ActionTokenUse))] == ["applied"]


def test_a_token_whose_answer_is_refused_is_used_up_with_the_refusal(s: Session) -> None:
    incident = failing(s)
    page = s.scalars(select(Notification).where(Notification.person_id == "chen")).one()
    tokens = actions.tokens_for(s, page)
    assert answers.apply_token(s, tokens["resolve"]).applied
    late = answers.apply_token(s, tokens["acknowledge"])
    assert (late.status, late.reason) == (409, f"incident {incident.id} is already resolved")
    assert {u.action: u.outcome for u in s.scalars(select(ActionTokenUse))} == {
        "resolve": "applied", "acknowledge": "refused"}


def test_a_forged_token_writes_nothing(s: Session) -> None:
    incident = failing(s)
    page = s.scalars(select(Notification).where(Notification.person_id == "chen")).one()
    token = actions.tokens_for(s, page)["acknowledge"]
    kid, claims, signature = token.split(".")
    with pytest.raises(actions.TokenRefused) as refused:
        answers.apply_token(s, f"{kid}.{claims}.{signature[::-1]}")
    assert refused.value.status == 401 and incident.status == "open"
    assert s.scalars(select(Answer)).all() == [] and s.scalars(select(ActionTokenUse)).all() == []
