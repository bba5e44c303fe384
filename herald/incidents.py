"""Incidents: the lifecycle of a ticket herald opens for a failing flow or an expired credential.

Plain functions over a session, called by the tasks and sweeps in their own transaction:
:func:`open_or_join` (a repeat of the same dedup key joins the open incident), :func:`acknowledge`,
:func:`resolve`, :func:`reassign`, :func:`escalate` (the ``incident.escalate`` timed work) and
:func:`close` (recovery or rotation). At most one incident per dedup key is open (or acknowledged).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald import escalation, timers, writeback
from herald.audit import audit
from herald.events import Severity, make_event
from herald.models import DueWork, EventRow, Incident, utcnow
from herald.publishing import publish
from herald.settings import get_settings

OPEN = ("open", "acknowledged")
ESCALATE = "incident.escalate"  # the kind of timed work that raises an incident's level


def find_open(s: Session, dedup_key: str) -> Incident | None:
    """The open (or acknowledged) incident for this dedup key, locked; None when there is none."""
    return s.scalar(select(Incident).where(Incident.dedup_key == dedup_key, Incident.status.in_(OPEN))
                    .with_for_update())


def get(s: Session, incident_id: int) -> Incident | None:
    """The incident with this id, locked; None when there is none (an id past bigint included)."""
    if not 0 < incident_id < 2**63:
        return None
    return s.get(Incident, incident_id, with_for_update=True)


def existing(s: Session, incident_id: int) -> Incident | None:
    """The incident an event names, if it exists (an event about an incident herald opened itself); not locked."""
    if not 0 < incident_id < 2**63:
        return None
    return s.get(Incident, incident_id)


def first_event(s: Session, incident_id: int) -> EventRow | None:
    """The event that opened the incident (its flow and audience are the incident's)."""
    return s.scalar(select(EventRow).where(EventRow.incident_id == incident_id)
                    .order_by(EventRow.received_at).limit(1))


def open(s: Session, dedup_key: str, *, environment: str, title: str, severity: str, actor: str,
         escalate: bool = True, subject: str | None = None, **details: Any) -> Incident:
    """Open a new incident, audited, and (``escalate``) schedule its first escalation step.

    Raises :class:`IntegrityError` (its savepoint rolled back, the caller's transaction intact)
    when another transaction opened one for the same dedup key at the same moment.
    """
    with s.begin_nested():
        incident = Incident(dedup_key=dedup_key, environment=environment, title=title, severity=severity,
                            subject=subject)
        s.add(incident)
        s.flush()
    if escalate:
        schedule_escalation(s, incident)
    audit(s, actor, "incident.opened", "incident", incident.id, **details)
    return incident


def about(incident: Incident, subject: str) -> bool:
    """Whether the incident is about ``subject`` (a flow's name); rows from before 0005 by their title."""
    if incident.subject is not None:
        return incident.subject == subject
    return incident.title.startswith(f"{subject}: ")


def join(incident: Incident, severity: str) -> bool:
    """Count one more event into the open incident; True when it made it more severe (tell people again)."""
    incident.event_count += 1
    incident.updated_at = utcnow()
    if Severity(severity).rank > Severity(incident.severity).rank:
        incident.severity = severity
        return True
    return False


def open_or_join(s: Session, dedup_key: str, *, environment: str, title: str, severity: str, actor: str,
                 subject: str | None = None, **details: Any) -> tuple[Incident, bool]:
    """Open an incident for the dedup key, or join the open one (nobody is notified twice).

    Returns the incident and whether its audience is to be told: True for a new incident, or one
    the event made more severe.
    """
    for _ in range(3):
        incident = find_open(s, dedup_key)
        if incident is not None:
            return incident, join(incident, severity)
        try:
            return open(s, dedup_key, environment=environment, title=title, severity=severity, actor=actor,
                        subject=subject, **details), True
        except IntegrityError:
            continue  # another worker opened it at the same moment: join theirs
    raise RuntimeError(f"could not open or join an incident for {dedup_key!r}")


def schedule_escalation(s: Session, incident: Incident) -> None:
    """Timed work lives in Postgres: the due-work tick raises the level until someone acknowledges."""
    settings = get_settings()
    if settings.escalation_max_level < 1:
        return
    step = timers.schedule(s, ESCALATE, str(incident.id),
                           due_at=utcnow() + timedelta(seconds=settings.escalate_after_s),
                           payload={"repeat_s": settings.escalate_after_s,
                                    "max_step": settings.escalation_max_level})
    incident.next_escalation_at = step.due_at


def stop_escalation(s: Session, incident: Incident) -> None:
    timers.cancel(s, ESCALATE, str(incident.id))
    incident.next_escalation_at = None


# --- answers ------------------------------------------------------------------------------------

def acknowledge(s: Session, incident: Incident, by: str, assignee: str | None = None) -> None:
    """Someone took it: an open incident is assigned (to ``by`` unless named) and stops escalating
    (its chain too: herald/escalation.py)."""
    if incident.status == "open":
        incident.status = "acknowledged"
        incident.assignee = assignee or by
        stop_escalation(s, incident)
        escalation.stop(s, incident, by=by, reason="acknowledged")
    incident.updated_at = utcnow()


def resolve(s: Session, incident: Incident, now: datetime | None = None) -> None:
    """Resolved for good: closed at ``now`` and no longer escalating."""
    now = now or utcnow()
    incident.status, incident.closed_at, incident.updated_at = "resolved", now, now
    stop_escalation(s, incident)
    escalation.stop(s, incident, by="herald", reason="resolved")


def reassign(s: Session, incident: Incident, assignee: str | None, by: str = "herald") -> None:
    """Hand the incident to ``assignee`` (a follow-up request without one keeps the current assignee).

    An incident with an escalation chain restarts it for the assignee (herald/escalation.py): they are
    paged first, then the policy's steps, until someone acknowledges.
    """
    incident.assignee = assignee or incident.assignee
    incident.updated_at = utcnow()
    escalation.restart(s, incident, incident.assignee, by=by)


# The answers that apply to an incident (an approval's answers do not).
ANSWERS = frozenset({"acknowledged", "resolved", "follow_up_requested"})


def answer(s: Session, incident: Incident, action: str, responder: str, *, assignee: str | None = None,
           comment: str | None = None, event_id: str | None = None, **details: Any) -> None:
    """Apply one of :data:`ANSWERS` from ``responder``, audited with the incident's new state (and
    ``details``: how the answer came). Who may answer is herald/answers.py's business."""
    if action == "acknowledged":
        acknowledge(s, incident, responder, assignee)
    elif action == "resolved":
        resolve(s, incident)
    elif action == "follow_up_requested":
        reassign(s, incident, assignee, by=responder)
    else:
        raise ValueError(f"{action!r} does not apply to an incident (known: {', '.join(sorted(ANSWERS))})")
    escalation.answered(s, incident, responder)
    audit(s, responder, f"incident.{action}", "incident", incident.id, event_id=event_id,
          status=incident.status, assignee=incident.assignee, comment=comment, **details)


def close(s: Session, dedup_key: str, *, actor: str, action: str, now: datetime | None = None,
          subject: str | None = None, environment: str | None = None, **details: Any) -> Incident | None:
    """Resolve the open incident for this dedup key (a recovery, a rotation), audited as ``action``.

    With ``subject`` and ``environment`` (a flow's recovery), only an incident about that subject in
    that environment closes: a recovery of another flow carrying this dedup key closes nothing.
    """
    incident = find_open(s, dedup_key)
    if incident is None:
        return None
    if environment is not None and incident.environment != environment:
        return None
    if subject is not None and not about(incident, subject):
        return None
    resolve(s, incident, now)
    audit(s, actor, action, "incident", incident.id, **details)
    return incident


# --- escalation ---------------------------------------------------------------------------------

def escalate(s: Session, incident: Incident, level: int) -> bool:
    """Raise an incident still open and unacknowledged to ``level``; False when it moved on.

    The fence on the subject: only from level ``level - 1``. An acknowledged or resolved incident,
    or one already at that level (a repeated step), is left alone.
    """
    if incident.status != "open" or incident.escalation_level != level - 1:
        return False
    incident.escalation_level = level
    incident.updated_at = utcnow()
    return True


@timers.handler(ESCALATE)
def escalate_incident(s: Session, row: DueWork) -> bool:
    """The timed step: raise the incident to level ``row.step``, schedule the next, page again.

    Who is told at each level is the routing's business (docs/sweeps.md); this step records the
    level, the time and the audit row.
    """
    incident = s.get(Incident, int(row.subject), with_for_update=True)
    if incident is None or not escalate(s, incident, row.step):
        return False
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
    writeback.record(s, environment=incident.environment, kind="incident.escalated", subject=f"incident:{incident.id}",
                     data={"type": "incident", "id": incident.id, "status": incident.status, "level": row.step,
                           "title": incident.title})
    _page_again(s, incident, row.step)
    return True


def escalate_now(s: Session, incident: Incident, *, reason: str) -> bool:
    """An incident without a chain whose page reached nobody: raise its level now (herald/escalation.py
    ``advance_now``), fenced by its due escalation step: that step runs now instead of at its time, the
    next one is scheduled as usual; False when no step is due (acknowledged, at its last level)."""
    row = s.scalar(select(DueWork).where(DueWork.kind == ESCALATE, DueWork.subject == str(incident.id),
                                         DueWork.state == "due").order_by(DueWork.step).limit(1)
                   .with_for_update(skip_locked=True))
    if row is None or not timers.complete(s, row.id, row.token, row.step, state="done", by="herald/escalation"):
        return False
    audit(s, "herald/escalation", "incident.escalated_now", "incident", incident.id, level=row.step, reason=reason)
    return escalate_incident(s, row)


def _page_again(s: Session, incident: Incident, level: int) -> None:
    """Tell the incident's audience again, through the outbox in this same transaction (once per level)."""
    first = first_event(s, incident.id)
    if first is None or first.flow != "failure":
        return  # only flow-failure incidents page; others record their level
    event = make_event("flow.escalated", {"flow": str(first.data["flow"]), "dedup_key": incident.dedup_key,
                                          "error": f"{incident.title}: unacknowledged, escalated to level {level}",
                                          "incident_id": incident.id, "level": level},
                       environment=incident.environment, severity=incident.severity, source="herald/escalation",
                       idempotency_key=f"incident:{incident.id}:escalation:{level}")
    publish(event, session=s)
