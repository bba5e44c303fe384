"""Approvals: a request, the votes of its approvers, the quorum that decides it, and its expiry.

Plain functions over a session, called in the caller's transaction: ingest opens a request, a door
votes through herald/answers.py (which decides who may vote), the approvals sweep closes expired ones
(schedules/approvals.py). The rules kept here are the approval's own:

- separation of duties: the requester never answers their own request;
- one vote per approver (a second is refused, never counted twice);
- one ``reject`` rejects; ``quorum`` approvals approve; ``request_info`` counts as neither;
- a decided approval takes no more votes, and an expired one fails closed (it never approves).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald import writeback
from herald.audit import audit
from herald.events import make_event
from herald.models import Approval, ApprovalVote, EventRow, utcnow
from herald.publishing import publish

# An answer's action (``response.<action>``) -> the vote it casts; other answers do not apply to an approval.
DECISIONS = {"approved": "approve", "rejected": "reject", "info_requested": "request_info"}


def request(s: Session, event_id: uuid.UUID, data: dict[str, Any]) -> Approval:
    """Open the approval an ``approval.requested`` event asks for (``data`` is the event's)."""
    approval = Approval(event_id=event_id, request_kind=data["request_kind"], target=data["target"],
                        requester=data["requester"], quorum=data["quorum"],
                        expires_at=datetime.fromisoformat(data["expires_at"]))
    s.add(approval)
    return approval


def get(s: Session, approval_id: int) -> Approval | None:
    """The approval with this id, locked; None when there is none (an id past bigint included)."""
    if not 0 < approval_id < 2**63:
        return None
    return s.get(Approval, approval_id, with_for_update=True)


def environment(s: Session, approval: Approval) -> str:
    """The environment the approval was requested in (its request event's)."""
    return s.scalars(select(EventRow.environment).where(EventRow.id == approval.event_id)).one()


def expire(approval: Approval, now: datetime | None = None) -> bool:
    """Mark a pending approval past its expiry ``expired``; True when it is (or already was) expired."""
    now = now or utcnow()
    if approval.status == "pending" and approval.expires_at <= now:
        approval.status, approval.decided_at = "expired", now
    return approval.status == "expired"


def refusal(approval: Approval, person: str, now: datetime | None = None) -> str | None:
    """Why ``person`` may not vote on ``approval`` now; None when they may.

    Checking expiry expires the approval (:func:`expire`), so a late vote leaves it ``expired``.
    """
    if person == approval.requester:
        return "the requester cannot answer their own approval"
    if approval.status != "pending":
        return f"approval is already {approval.status}"
    if expire(approval, now):
        return "approval expired"
    return None


def vote(s: Session, approval: Approval, person: str, decision: str, *, comment: str | None = None,
         event_id: str | None = None, now: datetime | None = None, **details: Any) -> str | None:
    """Count ``person``'s vote and decide the approval when it reaches a verdict.

    Returns why the vote is refused (:func:`refusal`, or a second vote of the same approver), or
    None when it counted; a counted vote is audited with the approval's new state (and ``details``:
    how the answer came).
    """
    if decision not in DECISIONS.values():
        raise ValueError(f"not a decision: {decision!r} (known: {', '.join(DECISIONS.values())})")
    refused = refusal(approval, person, now)
    if refused:
        return refused
    try:
        with s.begin_nested():
            s.add(ApprovalVote(approval_id=approval.id, person_id=person, decision=decision, comment=comment))
    except IntegrityError:
        return "this approver already answered"
    votes = tally(s, approval)
    audit(s, person, f"approval.{decision}", "approval", approval.id, event_id=event_id,
          status=approval.status, votes=len(votes), quorum=approval.quorum, **details)
    return None


def tally(s: Session, approval: Approval) -> list[str]:
    """Decide the approval from its votes (one reject rejects; ``quorum`` approvals approve); return them."""
    votes = list(s.scalars(select(ApprovalVote.decision).where(ApprovalVote.approval_id == approval.id)))
    if "reject" in votes:
        approval.status, approval.decided_at = "rejected", utcnow()
    elif votes.count("approve") >= approval.quorum:
        approval.status, approval.decided_at = "approved", utcnow()
    return votes


def voted(s: Session, approval: Approval, person: str) -> bool:
    """Whether ``person`` (a directory id) has already answered this approval."""
    return s.scalar(select(ApprovalVote.id).where(ApprovalVote.approval_id == approval.id,
                                                  ApprovalVote.person_id == person)) is not None


def counts(s: Session, approval: Approval) -> dict[str, int]:
    """How many of each decision the approval has: ``{"approve": 2, "reject": 0, "request_info": 1}``."""
    votes = list(s.scalars(select(ApprovalVote.decision).where(ApprovalVote.approval_id == approval.id)))
    return {decision: votes.count(decision) for decision in DECISIONS.values()}


def close_expired(s: Session, approval: Approval, now: datetime | None = None, *,
                  actor: str = "herald/approvals") -> bool:
    """Close a pending approval past its expiry (fail closed); True when it is (or already was) expired.

    Closing is audited, written back to the admin platform (``approval.expired``) and tells the
    requester and the approvers (an ``approval.expired`` event through the outbox, in this transaction).
    """
    was = approval.status
    if not expire(approval, now):
        return False
    if was == "pending":
        _tell_expired(s, approval, actor)
    return True


def _tell_expired(s: Session, approval: Approval, actor: str) -> None:
    request = s.get_one(EventRow, approval.event_id)
    approved = counts(s, approval)["approve"]
    audit(s, actor, "approval.expired", "approval", approval.id, approvals=approved, quorum=approval.quorum)
    data: dict[str, Any] = {"request_kind": approval.request_kind, "target": approval.target,
                            "requester": approval.requester, "quorum": approval.quorum,
                            "expires_at": approval.expires_at.isoformat(), "approval_id": approval.id,
                            "approvals": approved}
    writeback.record(s, environment=request.environment, kind="approval.expired", subject=f"approval:{approval.id}",
                data={"type": "approval", "id": approval.id, "status": "expired", "target": approval.target,
                      "quorum": approval.quorum, "approvals": approved, "expires_at": data["expires_at"]})
    publish(make_event("approval.expired", data, environment=request.environment, source=actor,
                       idempotency_key=f"approval:{approval.id}:expired"), session=s)
