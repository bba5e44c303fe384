"""The approvals sweep: close every pending approval past its expiry, on time, without waiting for a vote.

An approval that reaches ``expires_at`` undecided fails closed: it is ``expired`` (never approved),
audited, written back to the admin platform (``approval.expired``), and its requester and approvers
are told (an ``approval.expired`` event through the outbox, in the sweep's transaction; it replaces the
approvers' request). The work is herald/approvals.py ``close_expired``, which a late vote also calls,
so an approval is closed once whichever comes first. Rows are locked with SKIP LOCKED: a vote in
flight is not waited for, and the next run takes what it skipped.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import approvals, db
from herald.models import Approval, utcnow
from schedules.runs import Summary, run_exclusive

log = logging.getLogger(__name__)

SWEEP = "approvals"
SOURCE = "herald/sweep.approvals"
BATCH = 500


def close_expired(s: Session, now: datetime) -> Summary:
    """Close the pending approvals whose expiry has come (at most ``BATCH`` per run); count them."""
    query = (select(Approval).where(Approval.status == "pending", Approval.expires_at <= now)
             .order_by(Approval.expires_at).limit(BATCH))
    if db.is_postgres():
        query = query.with_for_update(skip_locked=True)
    closed = [a.id for a in s.scalars(query) if approvals.close_expired(s, a, now, actor=SOURCE)]
    if closed:
        log.info("approvals sweep: %d expired (%s)", len(closed), ", ".join(map(str, closed[:20])))
    return {"expired": len(closed)}


def sweep_approvals(now: datetime | None = None, *, min_gap_s: float = 0.0) -> Summary | None:
    """Run the sweep once (None when another copy holds the lock). ``now`` simulates a later time."""
    return run_exclusive(SWEEP, lambda s: close_expired(s, now or utcnow()), min_gap_s=min_gap_s)
