"""Approval rules (herald/approvals.py) on an in-memory database: quorum, one vote each, no self-approval, expiry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import approvals
from herald.models import Approval, ApprovalVote, AuditLog, utcnow
from tests.unit.domain_helpers import memory_session, stored_event


@pytest.fixture
def s() -> Iterator[Session]:
    with memory_session() as session:
        yield session


def requested(s: Session, quorum: int = 2, expires_in: timedelta = timedelta(hours=4)) -> Approval:
    row = stored_event(s, "approval.requested", {
        "request_kind": "credential_set", "target": "orders-api", "requester": "alice", "quorum": quorum,
        "expires_at": (utcnow() + expires_in).isoformat()})
    approval = approvals.request(s, row.id, row.data)
    s.flush()
    return approval


def votes(s: Session, approval: Approval) -> list[tuple[str, str]]:
    s.flush()
    return [(v.person_id, v.decision) for v in s.scalars(
        select(ApprovalVote).where(ApprovalVote.approval_id == approval.id).order_by(ApprovalVote.id))]


def test_a_request_opens_a_pending_approval_from_the_events_data(s: Session) -> None:
    approval = requested(s, quorum=3)
    assert (approval.status, approval.requester, approval.quorum, approval.target) == (
        "pending", "alice", 3, "orders-api")
    assert approval.expires_at > utcnow()
    assert approvals.get(s, approval.id) is approval


def test_the_quorum_decides_not_the_first_vote(s: Session) -> None:
    approval = requested(s, quorum=2)
    assert approvals.vote(s, approval, "bruno", "approve", event_id="e1") is None
    assert approval.status == "pending" and approval.decided_at is None
    assert approvals.vote(s, approval, "dana", "approve", event_id="e2") is None
    assert approval.status == "approved" and approval.decided_at is not None
    assert votes(s, approval) == [("bruno", "approve"), ("dana", "approve")]
    audit = s.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert [(a.actor, a.action, a.details["status"], a.details["votes"]) for a in audit] == [
        ("bruno", "approval.approve", "pending", 1), ("dana", "approval.approve", "approved", 2)]


def test_a_quorum_of_one_is_approved_by_one_vote(s: Session) -> None:
    approval = requested(s, quorum=1)
    assert approvals.vote(s, approval, "bruno", "approve") is None
    assert approval.status == "approved"


def test_one_rejection_rejects_whatever_the_quorum(s: Session) -> None:
    approval = requested(s, quorum=2)
    approvals.vote(s, approval, "bruno", "approve")
    assert approvals.vote(s, approval, "dana", "reject") is None
    assert approval.status == "rejected"


def test_a_request_for_information_counts_for_neither(s: Session) -> None:
    approval = requested(s, quorum=1)
    assert approvals.vote(s, approval, "bruno", "request_info") is None
    assert approval.status == "pending"
    assert approvals.vote(s, approval, "dana", "approve") is None
    assert approval.status == "approved"


def test_an_approver_votes_once(s: Session) -> None:
    approval = requested(s, quorum=2)
    approvals.vote(s, approval, "bruno", "approve")
    assert approvals.vote(s, approval, "bruno", "approve") == "this approver already answered"
    assert approval.status == "pending"  # two answers of one person are not a quorum of two
    assert votes(s, approval) == [("bruno", "approve")]
    # the refused duplicate left the transaction usable: another approver still counts
    assert approvals.vote(s, approval, "dana", "approve") is None
    assert approval.status == "approved"


def test_the_requester_cannot_approve_their_own_request(s: Session) -> None:
    approval = requested(s, quorum=1)
    assert approvals.vote(s, approval, "alice", "approve") == "the requester cannot answer their own approval"
    assert approval.status == "pending" and votes(s, approval) == []
    assert approvals.vote(s, approval, "alice", "reject") == "the requester cannot answer their own approval"
    assert approval.status == "pending"


def test_an_expired_approval_fails_closed(s: Session) -> None:
    approval = requested(s, quorum=1, expires_in=timedelta(hours=1))
    later = utcnow() + timedelta(hours=2)
    assert approvals.vote(s, approval, "bruno", "approve", now=later) == "approval expired"
    assert (approval.status, approval.decided_at) == ("expired", later)
    assert votes(s, approval) == []
    # and stays expired: no vote counts any more
    assert approvals.vote(s, approval, "dana", "approve") == "approval is already expired"


def test_expiry_leaves_a_pending_approval_within_its_time_alone(s: Session) -> None:
    approval = requested(s, quorum=1, expires_in=timedelta(hours=1))
    assert approvals.expire(approval, utcnow() + timedelta(minutes=59)) is False
    assert approval.status == "pending"
    assert approvals.expire(approval, approval.expires_at) is True  # at the expiry time: expired
    assert approval.status == "expired"


def test_a_decided_approval_takes_no_more_votes(s: Session) -> None:
    approval = requested(s, quorum=1)
    approvals.vote(s, approval, "bruno", "approve")
    assert approvals.vote(s, approval, "dana", "reject") == "approval is already approved"
    assert approval.status == "approved" and votes(s, approval) == [("bruno", "approve")]


def test_an_unknown_decision_is_a_programming_error(s: Session) -> None:
    approval = requested(s)
    with pytest.raises(ValueError, match="not a decision"):
        approvals.vote(s, approval, "bruno", "approved")


def test_ids_out_of_range_find_nothing(s: Session) -> None:
    assert approvals.get(s, 0) is None and approvals.get(s, 2**63) is None and approvals.get(s, 12) is None
