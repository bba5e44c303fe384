"""ingest: validate, deduplicate by idempotency key, persist, group into incidents, apply answers.

The one task that receives an event body rather than ids: it is where events enter.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald import db, timers
from herald.app import app
from herald.audit import audit
from herald.errors import PoisonMessage
from herald.events import INCIDENT_TYPES, Event, Severity, validate_event
from herald.lanes import is_ops, queue_for
from herald.models import Approval, ApprovalVote, EventRow, Incident, Outbox, utcnow
from herald.settings import get_settings
from herald.taskbase import HeraldTask

log = logging.getLogger(__name__)

OPEN = ("open", "acknowledged")


@app.task(base=HeraldTask, name="herald.ingest")
def ingest(envelope: dict[str, Any]) -> str:
    event = validate_event(envelope)
    with db.session() as s:
        status, stored_id = persist(s, event)
    if status == "received":
        app.send_task("herald.enrich", args=[str(stored_id)],
                      queue=queue_for("herald.enrich", ops=is_ops(event.type, event.source)))
    log.info("ingested event %s (%s) as %s", stored_id, event.type, status, extra={"event_id": str(stored_id)})
    return status


def persist(s: Session, event: Event) -> tuple[str, uuid.UUID]:
    """Insert the event once; returns its pipeline status (``received`` when enrich should run) and the id
    of the stored event, which for a duplicate is the first copy's."""
    insert = pg_insert if db.is_postgres() else sqlite_insert
    values = dict(
        id=event.id, type=event.type, flow=event.flow.value, source=event.source,
        environment=event.environment, severity=event.effective_severity().value, subject=event.subject,
        idempotency_key=event.key, dedup_key=event.dedup_key(), occurred_at=event.time, data=event.data,
        status="received", received_at=utcnow(), status_at=utcnow(),
    )
    # RETURNING says whether this copy inserted the row; rowcount cannot: SQLAlchemy 2.1 with psycopg 3.3
    # reports -1 for INSERT ... ON CONFLICT DO NOTHING whether or not a row went in.
    inserted = s.scalar(insert(EventRow).values(**values)
                        .on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(EventRow.id))
    s.execute(update(Outbox).where(Outbox.idempotency_key == event.key, Outbox.ingested_at.is_(None))
              .values(ingested_at=utcnow()))
    if inserted is None:
        first_id, first_status = s.execute(select(EventRow.id, EventRow.status)
                                           .where(EventRow.idempotency_key == event.key)).one()
        log.info("event %s duplicates %s (idempotency key %r): ignored", event.id, first_id, event.key,
                 extra={"event_id": str(first_id)})
        # Still 'received': the first run may have died before enqueueing enrich; do it again.
        return ("received" if first_status == "received" else "duplicate"), first_id
    return _store(s, event, s.get_one(EventRow, event.id)), event.id


def _store(s: Session, event: Event, row: EventRow) -> str:
    """What a new event does besides its row: open or join an incident, open an approval, apply an answer."""
    if event.type in INCIDENT_TYPES:
        return _group(s, row)
    if event.type == "flow.recovered":
        _close_incident(s, row)
    elif event.type == "approval.requested":
        data = event.data
        s.add(Approval(event_id=row.id, request_kind=data["request_kind"], target=data["target"],
                       requester=data["requester"], quorum=data["quorum"],
                       expires_at=datetime.fromisoformat(data["expires_at"])))
    elif event.flow.value == "response":
        return _apply_response(s, row)
    elif event.data.get("incident_id") is not None:
        # an event about an incident herald opened itself (credential expired, escalation step)
        row.incident_id = s.scalar(select(Incident.id).where(Incident.id == event.data["incident_id"]))
    return "received"


def _group(s: Session, row: EventRow) -> str:
    """Open an incident for the dedup key, or join the open one (nobody is notified twice)."""
    assert row.dedup_key is not None
    for _ in range(3):
        incident = s.scalar(select(Incident).where(Incident.dedup_key == row.dedup_key,
                                                   Incident.status.in_(OPEN)).with_for_update())
        if incident is not None:
            incident.event_count += 1
            incident.updated_at = utcnow()
            row.incident_id = incident.id
            if Severity(row.severity).rank > Severity(incident.severity).rank:
                incident.severity = row.severity  # worse than before: tell people again
                return "received"
            row.status = "grouped"
            return "grouped"
        try:
            with s.begin_nested():
                incident = Incident(dedup_key=row.dedup_key, environment=row.environment,
                                    title=f"{row.data['flow']}: {row.type}", severity=row.severity)
                s.add(incident)
                s.flush()
        except IntegrityError:
            continue  # another worker opened it at the same moment: join theirs
        row.incident_id = incident.id
        _schedule_escalation(s, incident)
        audit(s, "herald", "incident.opened", "incident", incident.id, event_id=str(row.id))
        return "received"
    raise RuntimeError(f"could not open or join an incident for {row.dedup_key!r}")


def _schedule_escalation(s: Session, incident: Incident) -> None:
    """Timed work lives in Postgres: the due-work tick raises the level until someone acknowledges."""
    settings = get_settings()
    if settings.escalation_max_level < 1:
        return
    step = timers.schedule(s, "incident.escalate", str(incident.id),
                        due_at=utcnow() + timedelta(seconds=settings.escalate_after_s),
                        payload={"repeat_s": settings.escalate_after_s, "max_step": settings.escalation_max_level})
    incident.next_escalation_at = step.due_at


def _stop_escalation(s: Session, incident: Incident) -> None:
    timers.cancel(s, "incident.escalate", str(incident.id))
    incident.next_escalation_at = None


def _close_incident(s: Session, row: EventRow) -> None:
    incident = s.scalar(select(Incident).where(Incident.dedup_key == row.dedup_key,
                                               Incident.status.in_(OPEN)).with_for_update())
    if incident is None:
        return
    incident.status, incident.closed_at, incident.updated_at = "resolved", utcnow(), utcnow()
    _stop_escalation(s, incident)
    row.incident_id = incident.id
    audit(s, row.source, "incident.recovered", "incident", incident.id, event_id=str(row.id))


def _locked(s: Session, model: type[Incident] | type[Approval], ident: int) -> Any:
    """The row with this id, locked; None when there is none (an id past bigint included)."""
    if not 0 < ident < 2**63:
        return None
    return s.get(model, ident, with_for_update=True)


def _refuse(s: Session, row: EventRow, action: str, subject_type: str, subject_id: object, reason: str) -> str:
    """Refuse an answer for good: recorded on the event and in the audit log, never a dead letter.

    A dead letter would be replayed later, when the approval or incident it names may exist:
    an answer is judged against the state when it arrived, once.
    """
    audit(s, row.data["responder"], f"{action}.refused", subject_type, subject_id, reason=reason,
          event_id=str(row.id))
    row.status, row.status_at = "refused", utcnow()
    row.enrichment = {"refused": reason}
    log.warning("answer %s refused: %s", row.id, reason, extra={"event_id": str(row.id)})
    return "refused"


def _apply_response(s: Session, row: EventRow) -> str:
    """Write an answer back: incident status and assignee, approval votes and quorum, audit.

    An answer that cannot apply (to something that does not exist, or an action that does not fit
    it) is refused with its reason (:func:`_refuse`), like one from a person who may not answer.
    """
    data = row.data
    responder = data["responder"]
    action = row.type.removeprefix("response.")
    if data.get("incident_id") is not None:
        incident: Incident | None = _locked(s, Incident, data["incident_id"])
        if incident is None:
            return _refuse(s, row, f"incident.{action}", "incident", data["incident_id"],
                           f"incident {data['incident_id']} does not exist")
        if action not in ("acknowledged", "resolved", "follow_up_requested"):
            return _refuse(s, row, f"incident.{action}", "incident", incident.id,
                           f"{row.type} does not apply to an incident")
        row.incident_id = incident.id
        if action == "acknowledged" and incident.status == "open":
            incident.status = "acknowledged"
            incident.assignee = data.get("assignee") or responder
            _stop_escalation(s, incident)
        elif action == "resolved":
            incident.status, incident.closed_at = "resolved", utcnow()
            _stop_escalation(s, incident)
        elif action == "follow_up_requested":
            incident.assignee = data.get("assignee") or incident.assignee
        incident.updated_at = utcnow()
        audit(s, responder, f"incident.{action}", "incident", incident.id, event_id=str(row.id),
              status=incident.status, assignee=incident.assignee, comment=data.get("comment"))
        return "received"
    decision = {"approved": "approve", "rejected": "reject", "info_requested": "request_info"}.get(action)
    approval: Approval | None = _locked(s, Approval, data["approval_id"])
    if approval is None:
        return _refuse(s, row, f"approval.{decision or action}", "approval", data["approval_id"],
                       f"approval {data['approval_id']} does not exist")
    if decision is None:
        return _refuse(s, row, f"approval.{action}", "approval", approval.id,
                       f"{row.type} does not apply to an approval")
    refused = None
    if responder == approval.requester:
        refused = "the requester cannot answer their own approval"
    elif approval.status != "pending":
        refused = f"approval is already {approval.status}"
    elif approval.expires_at <= datetime.now(UTC):
        approval.status, approval.decided_at = "expired", utcnow()  # expiry fails closed
        refused = "approval expired"
    if refused:
        return _refuse(s, row, f"approval.{decision}", "approval", approval.id, refused)
    try:
        with s.begin_nested():
            s.add(ApprovalVote(approval_id=approval.id, person_id=responder, decision=decision,
                               comment=data.get("comment")))
    except IntegrityError:
        return _refuse(s, row, f"approval.{decision}", "approval", approval.id, "this approver already answered")
    votes = list(s.scalars(select(ApprovalVote.decision).where(ApprovalVote.approval_id == approval.id)))
    if "reject" in votes:
        approval.status, approval.decided_at = "rejected", utcnow()
    elif votes.count("approve") >= approval.quorum:
        approval.status, approval.decided_at = "approved", utcnow()
    audit(s, responder, f"approval.{decision}", "approval", approval.id, event_id=str(row.id),
          status=approval.status, votes=len(votes), quorum=approval.quorum)
    return "received"


def event_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError):
        raise PoisonMessage(f"not an event id: {value!r}") from None
