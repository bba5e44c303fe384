"""An answer that refers to nothing that exists is refused for good, with its reason; it is never a
dead letter that a later replay could turn into an approval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from herald import db, deadletters, keys
from herald.events import make_event
from herald.models import Answer, Approval, ApprovalVote, AuditLog, DeadLetter, EventRow, Incident
from producers import AnswerRefused, approval_requested, respond
from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import rows
from workers.ingest import ingest


def answers_key() -> str:
    with db.session() as s:
        _, key = keys.create(s, environment="prod", scope="answers")
    return key


def audit_rows() -> list[tuple[str, str, str | None]]:
    return [(r.action, r.subject_id, r.details.get("reason"))
            for r in rows(select(AuditLog.action, AuditLog.subject_id, AuditLog.details)
                          .where(AuditLog.action.like("%.refused")).order_by(AuditLog.id))]


def test_an_answer_for_an_approval_that_does_not_exist_yet_is_refused_and_never_approves_it(
        clean: None) -> None:
    # given an answer naming approval 1, which does not exist yet
    with pytest.raises(AnswerRefused) as refused:
        respond("approve", key=answers_key(), on_behalf_of="bruno", approval_id=1)
    # then it is refused, with its reason on the answer and in the audit log, and it is no dead letter
    assert (refused.value.status, refused.value.reason) == (404, "approval 1 does not exist in prod")
    assert rows(select(Answer.outcome, Answer.reason, Answer.event_id)) == [
        ("refused", "approval 1 does not exist in prod", None)]
    assert audit_rows() == [("approval.approve.refused", "1", "approval 1 does not exist in prod")]
    assert rows(select(DeadLetter.id)) == []
    # when the approval is created afterwards, and dead letters are replayed
    ingest(approval_requested(request_kind="api", target="orders-api", requester="alice", quorum=1,
                              expires_at=datetime.now(UTC) + timedelta(hours=1), environment="prod").to_json())
    assert rows(select(Approval.id, Approval.status)) == [(1, "pending")]
    assert deadletters.replay() == []
    # then the early answer approved nothing: there is nothing left to apply it later
    assert rows(select(Approval.status)) == [("pending",)]
    assert rows(select(ApprovalVote.id)) == []


@pytest.mark.parametrize(("subject", "reason"), [
    ({"incident_id": 42}, "incident 42 does not exist in prod"),
    ({"incident_id": 10**20}, f"incident {10**20} does not exist in prod"),
    ({"approval_id": -3}, "approval -3 does not exist in prod"),
])
def test_answers_to_nothing_are_refused_with_their_reason(clean: None, subject: dict[str, int], reason: str) -> None:
    action = "acknowledge" if "incident_id" in subject else "reject"
    with pytest.raises(AnswerRefused) as refused:
        respond(action, key=answers_key(), on_behalf_of="chen", **subject)  # type: ignore[arg-type]
    assert refused.value.reason == reason
    assert [r[2] for r in audit_rows()] == [reason]
    assert rows(select(DeadLetter.id)) == [] and rows(select(Incident.id)) == []


@pytest.mark.expect_dead_letters(r"^retries exhausted")
@pytest.mark.expect_log_errors(r"dead letter \d+: task")
def test_replaying_a_dead_lettered_response_event_applies_nothing(workers: Workers) -> None:
    # given an approval, and a response event that was dead-lettered (the database was down)
    ingest(approval_requested(request_kind="api", target="orders-api", requester="alice", quorum=1,
                              expires_at=datetime.now(UTC) + timedelta(hours=1), environment="prod").to_json())
    [approval_id] = [r.id for r in rows(select(Approval.id))]
    own = make_event("response.approved", {"responder": "alice", "approval_id": approval_id}, environment="prod")
    deadletters.record("task", "retries exhausted after 5 attempts: OperationalError()", task_name="herald.ingest",
                       queue="ingest", ref={"args": [own.to_json()], "kwargs": {}, "task_id": "t-1"})
    # when it is replayed to a worker
    workers.start("ingest", concurrency=1, kind="solo")
    assert len(deadletters.replay()) == 1
    # then no door applied it: it is refused, and the approval is untouched
    wait_until(lambda: rows(select(EventRow.status).where(EventRow.id == own.id)) == [("refused",)],
               message="the replayed answer refused")
    assert rows(select(Approval.status)) == [("pending",)]
    assert [r[0] for r in audit_rows()] == ["response.approved.refused"]
