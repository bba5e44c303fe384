"""The escalation auditor (OnCall's): no open incident's next chain step stays overdue.

A chain step is timed work (herald/escalation.py, kind ``incident.chain``) run by the due-work tick. If
that row went missing, failed for good, or the tick has not run (beat down, the sweeps pool stopped), the
incident would wait silently. Every ``HERALD_ESCALATION_AUDIT_INTERVAL_S`` this sweep finds the open
incidents whose next step was due more than ``HERALD_ESCALATION_AUDIT_GRACE_S`` ago and runs that step
itself, fenced by (token, step) like any step: a tick running the same step at the same moment runs it
once between them. When it had to act, it writes an audit row per incident (``incident.chain_step_overdue``)
and raises an operations event (``ops.processing_delayed`` about ``escalations``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from herald import escalation
from herald.models import utcnow
from herald.publishing import publish
from herald.settings import get_settings
from producers.helpers import ops_event
from schedules.runs import Summary, run_exclusive

log = logging.getLogger(__name__)

SWEEP = "escalations"
SOURCE = "herald/sweep.escalations"
BATCH = 100


def audit_chains(s: Session, now: datetime) -> Summary:
    """Re-run every overdue chain step (at most ``BATCH`` per run); count what was found and re-run."""
    grace = timedelta(seconds=get_settings().escalation_audit_grace_s)
    found = escalation.overdue(s, now, grace, limit=BATCH)
    rerun: list[int] = []
    failed = 0
    for incident_id in found:
        try:
            with s.begin_nested():  # one incident's failure must not undo the others
                if escalation.rerun_overdue(s, incident_id, now, grace):
                    rerun.append(incident_id)
        except Exception:  # logged with its traceback; the next run tries again
            failed += 1
            log.exception("escalation auditor: the overdue chain step of incident %s failed", incident_id)
    if rerun:
        log.warning("escalation auditor: re-ran the overdue chain step of %d incident(s): %s", len(rerun),
                    ", ".join(map(str, rerun[:20])))
        publish(ops_event("processing_delayed", "escalations", environment=get_settings().ops_environment,
                          metric="overdue_chain_steps", value=float(len(rerun)), threshold=0.0,
                          idempotency_key=f"ops:escalations:{now.isoformat()}", source=SOURCE), session=s)
    return {"overdue": len(found), "rerun": len(rerun), **({"failed": failed} if failed else {})}


def sweep_escalations(now: datetime | None = None, *, min_gap_s: float = 0.0) -> Summary | None:
    """Run the auditor once (None when another copy holds the lock). ``now`` simulates a later time."""
    return run_exclusive(SWEEP, lambda s: audit_chains(s, now or utcnow()), min_gap_s=min_gap_s)
