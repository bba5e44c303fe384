"""Incidents: the lifecycle of a ticket herald opens for a failing flow or an expired credential."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import timers
from herald.audit import audit
from herald.events import make_event
from herald.models import DueWork, EventRow, Incident, utcnow
from herald.publishing import publish


@timers.handler("incident.escalate")
def escalate_incident(s: Session, row: DueWork) -> bool:
    """Raise an incident still open and unacknowledged to escalation level ``step``.

    The fence on the subject: only from level ``step - 1``. An acknowledged or resolved incident,
    or one already at that level (a repeated step), is left alone. Who is told at each level is
    the routing's business (docs/sweeps.md); this step records the level, the time and the audit row.
    """
    incident = s.get(Incident, int(row.subject), with_for_update=True)
    if incident is None or incident.status != "open" or incident.escalation_level != row.step - 1:
        return False
    incident.escalation_level = row.step
    incident.updated_at = utcnow()
    repeat_s = row.payload.get("repeat_s")
    last_step = int(row.payload.get("max_step", row.step))
    if repeat_s and row.step < last_step:
        nxt = timers.schedule(s, row.kind, row.subject, due_at=utcnow() + timedelta(seconds=float(repeat_s)),
                       step=row.step + 1, payload=row.payload, token=row.token)
        incident.next_escalation_at = nxt.due_at
    else:
        incident.next_escalation_at = None
    audit(s, "herald/sweep.due", "incident.escalated", "incident", incident.id, level=row.step,
          token=str(row.token))
    _page_again(s, incident, row.step)
    return True


def _page_again(s: Session, incident: Incident, level: int) -> None:
    """Tell the incident's audience again, through the outbox in this same transaction (once per level)."""
    first = s.scalar(select(EventRow).where(EventRow.incident_id == incident.id)
                     .order_by(EventRow.received_at).limit(1))
    if first is None or first.flow != "failure":
        return  # only flow-failure incidents page; others record their level
    event = make_event("flow.escalated", {"flow": str(first.data["flow"]), "dedup_key": incident.dedup_key,
                                          "error": f"{incident.title}: unacknowledged, escalated to level {level}",
                                          "incident_id": incident.id, "level": level},
                       environment=incident.environment, severity=incident.severity, source="herald/escalation",
                       idempotency_key=f"incident:{incident.id}:escalation:{level}")
    publish(event, session=s)
