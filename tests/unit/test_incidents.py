"""The incident lifecycle (herald/incidents.py) on an in-memory database: open, join, answer, escalate, close."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald import incidents
from herald.models import DueWork, Incident, Outbox, utcnow
from tests.unit.domain_helpers import audited, memory_session, stored_event

KEY = "flow:orders-to-erp:prod"


@pytest.fixture
def s() -> Iterator[Session]:
    with memory_session() as session:
        yield session


def opened(s: Session, key: str = KEY, severity: str = "error") -> tuple[Incident, bool]:
    return incidents.open_or_join(s, key, environment="prod", title="orders-to-erp: flow.failed",
                                  severity=severity, actor="herald", event_id="e1")


def due_steps(s: Session) -> list[tuple[str, str, int, str]]:
    s.flush()
    return [(r.kind, r.subject, r.step, r.state) for r in s.scalars(select(DueWork).order_by(DueWork.id))]


def test_a_first_failure_opens_an_incident_that_will_escalate(s: Session) -> None:
    incident, tell = opened(s)
    assert tell is True
    assert (incident.status, incident.event_count, incident.escalation_level) == ("open", 1, 0)
    assert due_steps(s) == [("incident.escalate", str(incident.id), 1, "due")]
    assert incident.next_escalation_at is not None and incident.next_escalation_at > utcnow()
    assert audited(s) == [("herald", "incident.opened", str(incident.id))]


def test_a_repeat_of_the_same_key_joins_the_open_incident_and_nobody_is_told_twice(s: Session) -> None:
    first, _ = opened(s)
    again, tell = opened(s)
    assert again.id == first.id and tell is False
    assert first.event_count == 2
    assert due_steps(s) == [("incident.escalate", str(first.id), 1, "due")]  # one escalation, not two
    # a worse event joins too, but its audience hears it
    worse, tell = opened(s, severity="critical")
    assert (worse.id, tell, worse.severity, worse.event_count) == (first.id, True, "critical", 3)
    # a milder one does not lower it
    _, tell = opened(s, severity="warning")
    assert tell is False and first.severity == "critical"
    # another key is another incident
    other, tell = opened(s, key="flow:billing:prod")
    assert other.id != first.id and tell is True
    assert len(s.scalars(select(Incident)).all()) == 2


def test_an_acknowledged_incident_is_still_the_one_a_repeat_joins(s: Session) -> None:
    first, _ = opened(s)
    incidents.acknowledge(s, first, "chen")
    again, tell = opened(s)
    assert again.id == first.id and tell is False


def test_a_second_open_incident_for_one_key_is_refused_and_the_transaction_survives(s: Session) -> None:
    first, _ = opened(s)
    with pytest.raises(IntegrityError):
        incidents.open(s, KEY, environment="prod", title="again", severity="error", actor="herald")
    assert incidents.find_open(s, KEY) is first  # the savepoint rolled back; the session goes on


def test_a_resolved_incident_no_longer_groups_a_new_failure_opens_another(s: Session) -> None:
    first, _ = opened(s)
    incidents.resolve(s, first)
    second, tell = opened(s)
    assert second.id != first.id and tell is True
    assert [i.status for i in s.scalars(select(Incident).order_by(Incident.id))] == ["resolved", "open"]


def test_acknowledging_assigns_and_stops_the_escalation(s: Session) -> None:
    incident, _ = opened(s)
    incidents.acknowledge(s, incident, "chen")
    assert (incident.status, incident.assignee, incident.next_escalation_at) == ("acknowledged", "chen", None)
    assert due_steps(s) == [("incident.escalate", str(incident.id), 1, "cancelled")]
    # acknowledging again (another responder) changes nothing but the time
    incidents.acknowledge(s, incident, "bruno")
    assert (incident.status, incident.assignee) == ("acknowledged", "chen")


def test_acknowledging_for_someone_else_assigns_them(s: Session) -> None:
    incident, _ = opened(s)
    incidents.acknowledge(s, incident, "chen", assignee="dana")
    assert incident.assignee == "dana"


def test_resolving_closes_and_stops_the_escalation(s: Session) -> None:
    incident, _ = opened(s)
    incidents.resolve(s, incident)
    assert incident.status == "resolved" and incident.closed_at is not None
    assert incident.next_escalation_at is None
    assert due_steps(s)[0][3] == "cancelled"


def test_reassigning_hands_it_over_and_none_keeps_the_assignee(s: Session) -> None:
    incident, _ = opened(s)
    incidents.acknowledge(s, incident, "chen")
    incidents.reassign(s, incident, "dana")
    assert incident.assignee == "dana"
    incidents.reassign(s, incident, None)
    assert incident.assignee == "dana"


def test_an_answer_is_applied_and_audited_with_the_new_state(s: Session) -> None:
    incident, _ = opened(s)
    incidents.answer(s, incident, "acknowledged", "chen", comment="on it", event_id="e2")
    incidents.answer(s, incident, "follow_up_requested", "chen", assignee="dana", event_id="e3")
    incidents.answer(s, incident, "resolved", "dana", event_id="e4")
    assert audited(s)[1:] == [("chen", "incident.acknowledged", str(incident.id)),
                              ("chen", "incident.follow_up_requested", str(incident.id)),
                              ("dana", "incident.resolved", str(incident.id))]
    assert (incident.status, incident.assignee) == ("resolved", "dana")
    with pytest.raises(ValueError, match="does not apply"):
        incidents.answer(s, incident, "approved", "dana")


def test_close_resolves_the_open_incident_of_a_key_and_audits_why(s: Session) -> None:
    incident, _ = opened(s)
    at = utcnow() + timedelta(days=3)  # a simulated date (the expiry sweep's ``now``)
    closed = incidents.close(s, KEY, actor="herald/sweep.credentials", action="incident.resolved", now=at,
                             reason="credential rotated")
    assert closed is incident and (incident.status, incident.closed_at) == ("resolved", at)
    assert due_steps(s)[0][3] == "cancelled"
    assert audited(s)[-1] == ("herald/sweep.credentials", "incident.resolved", str(incident.id))
    assert incidents.close(s, KEY, actor="x", action="incident.recovered") is None  # nothing open: nothing to do


def test_escalation_is_fenced_by_the_level_and_stops_once_acknowledged(s: Session) -> None:
    incident, _ = opened(s)
    assert incidents.escalate(s, incident, 2) is False  # not from level 0 straight to 2
    assert incidents.escalate(s, incident, 1) is True and incident.escalation_level == 1
    assert incidents.escalate(s, incident, 1) is False  # a repeated step does nothing
    incidents.acknowledge(s, incident, "chen")
    assert incidents.escalate(s, incident, 2) is False and incident.escalation_level == 1


def escalation_step(s: Session, incident: Incident, step: int, max_step: int = 3) -> DueWork:
    row = DueWork(kind="incident.escalate", subject=str(incident.id), step=step, token=uuid.uuid4(),
                  due_at=utcnow(), payload={"repeat_s": 60, "max_step": max_step}, state="due", attempts=0)
    s.add(row)
    s.flush()
    return row


def test_an_escalation_step_raises_the_level_schedules_the_next_and_pages_again(s: Session) -> None:
    failure = stored_event(s, "flow.failed", {"flow": "orders-to-erp", "error": "HTTP 502"})
    incident, _ = opened(s)
    failure.incident_id = incident.id
    step = escalation_step(s, incident, 1)
    assert incidents.escalate_incident(s, step) is True
    assert incident.escalation_level == 1
    next_steps = s.scalars(select(DueWork).where(DueWork.step == 2)).all()
    assert [(r.token, r.state) for r in next_steps] == [(step.token, "due")]  # same chain, next step
    assert incident.next_escalation_at == next_steps[0].due_at
    page = s.scalars(select(Outbox)).one()  # published in this transaction, relayed only after commit
    assert page.envelope["type"] == "flow.escalated"
    assert page.envelope["data"]["level"] == 1 and page.envelope["data"]["incident_id"] == incident.id
    assert page.idempotency_key == f"incident:{incident.id}:escalation:1"  # one page per level
    assert audited(s)[-1] == ("herald/sweep.due", "incident.escalated", str(incident.id))
    # the same step again is stale: no second page
    assert incidents.escalate_incident(s, step) is False
    assert len(s.scalars(select(Outbox)).all()) == 1


def test_the_last_escalation_step_schedules_none(s: Session) -> None:
    incident, _ = opened(s)
    incident.escalation_level = 2
    assert incidents.escalate_incident(s, escalation_step(s, incident, 3, max_step=3)) is True
    assert incident.escalation_level == 3 and incident.next_escalation_at is None
    assert s.scalars(select(DueWork).where(DueWork.step == 4)).all() == []
    # only flow-failure incidents page: this one has no failure event
    assert s.scalars(select(Outbox)).all() == []


def test_an_escalation_step_for_an_acknowledged_or_missing_incident_is_stale(s: Session) -> None:
    incident, _ = opened(s)
    step = escalation_step(s, incident, 1)
    incidents.acknowledge(s, incident, "chen")
    assert incidents.escalate_incident(s, step) is False and incident.escalation_level == 0
    gone = DueWork(kind="incident.escalate", subject="999", step=1, token=uuid.uuid4(), due_at=utcnow(),
                   payload={}, state="due", attempts=0)
    assert incidents.escalate_incident(s, gone) is False


def test_ids_out_of_range_find_nothing(s: Session) -> None:
    incident, _ = opened(s)
    assert incidents.get(s, incident.id) is incident
    assert incidents.get(s, 0) is None and incidents.get(s, 2**63) is None and incidents.get(s, 999) is None
