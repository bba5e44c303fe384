"""An answer that refers to nothing that exists is refused for good, with its reason; it is never a
dead letter that a later replay could turn into an approval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from herald import db, deadletters
from herald.models import Approval, ApprovalVote, AuditLog, DeadLetter, EventRow, Incident
from producers import approval_requested, respond
from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import rows
from workers.ingest import ingest


def audit_rows() -> list[tuple[str, str, str | None]]:
    return [(r.action, r.subject_id, r.details.get("reason"))
            for r in rows(select(AuditLog.action, AuditLog.subject_id, AuditLog.details).order_by(AuditLog.id))]


def test_an_answer_for_an_approval_that_does_not_exist_yet_is_refused_and_never_approves_it(
        clean: None) -> None:
    # given an answer naming approval 1, which does not exist yet
    early = respond("approved", responder="bruno", approval_id=1, environment="prod")
    # when it is ingested (the task as a worker runs it: a dead letter would be written here)
    assert ingest(early.to_json()) == "refused"
    # then it is refused, with its reason on the event and in the audit log, and it is no dead letter
    assert rows(select(EventRow.status, EventRow.enrichment).where(EventRow.id == early.id)) == [
        ("refused", {"refused": "approval 1 does not exist"})]
    assert audit_rows() == [("approval.approve.refused", "1", "approval 1 does not exist")]
    assert rows(select(DeadLetter.id)) == []
    # when the approval is created afterwards, and dead letters are replayed and the answer sent again
    ingest(approval_requested(request_kind="api", target="orders-api", requester="alice", quorum=1,
                              expires_at=datetime.now(UTC) + timedelta(hours=1), environment="prod").to_json())
    assert rows(select(Approval.id, Approval.status)) == [(1, "pending")]
    assert deadletters.replay() == []
    assert ingest(early.to_json()) == "duplicate"
    # then the early answer approved nothing
    assert rows(select(Approval.status)) == [("pending",)]
    assert rows(select(ApprovalVote.id)) == []


@pytest.mark.parametrize(("answer", "reason"), [
    (respond("acknowledged", responder="chen", incident_id=42, environment="prod"), "incident 42 does not exist"),
    (respond("acknowledged", responder="chen", incident_id=10**20, environment="prod"),
     f"incident {10**20} does not exist"),
    (respond("rejected", responder="chen", approval_id=-3, environment="prod"), "approval -3 does not exist"),
])
def test_answers_to_nothing_are_refused_with_their_reason(clean: None, answer: object, reason: str) -> None:
    assert ingest(answer.to_json()) == "refused"  # type: ignore[attr-defined]
    assert rows(select(EventRow.status, EventRow.enrichment)) == [("refused", {"refused": reason})]
    assert [r[2] for r in audit_rows()] == [reason]
    assert rows(select(DeadLetter.id)) == [] and rows(select(Incident.id)) == []


@pytest.mark.expect_dead_letters(r"^retries exhausted")
@pytest.mark.expect_log_errors(r"dead letter \d+: task")
def test_replaying_an_answer_runs_every_check_again(workers: Workers) -> None:
    # given an approval, and a requester's own answer that was dead-lettered (the database was down)
    ingest(approval_requested(request_kind="api", target="orders-api", requester="alice", quorum=1,
                              expires_at=datetime.now(UTC) + timedelta(hours=1), environment="prod").to_json())
    [approval_id] = [r.id for r in rows(select(Approval.id))]
    own = respond("approved", responder="alice", approval_id=approval_id, environment="prod")
    deadletters.record("task", "retries exhausted after 5 attempts: OperationalError()", task_name="herald.ingest",
                       queue="ingest", ref={"args": [own.to_json()], "kwargs": {}, "task_id": "t-1"})
    # when it is replayed to a worker
    workers.start("ingest", concurrency=1, kind="solo")
    assert len(deadletters.replay()) == 1
    # then the answer is judged like any other: the requester cannot approve their own request
    wait_until(lambda: rows(select(EventRow.status).where(EventRow.id == own.id)) == [("refused",)],
               message="the replayed answer refused")
    assert rows(select(Approval.status)) == [("pending",)]
    with db.session() as s:
        assert s.scalar(select(AuditLog.details).where(AuditLog.action == "approval.approve.refused")) == {
            "reason": "the requester cannot answer their own approval", "event_id": str(own.id)}
