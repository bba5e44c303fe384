"""The per-flow table: what differs between the seven flows, in one entry each.

Every event goes through the same pipeline; a flow's entry says what its stages do differently:

- ``ingest``: what a new event does besides its row (open or join an incident, open an approval,
  apply an answer), returning the event's pipeline status;
- ``subjects`` and ``audience``: which directory resources name its owners, and what else enrich
  adds for routing (an approval's requester, the audience of what an answer answers);
- ``name_field``, ``body`` and ``headline``: what its notification says (herald/wording.py).

A new flow is its event types in herald/events.py and one entry in :data:`FLOWS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from herald import approvals, incidents, wording
from herald.audit import audit
from herald.events import INCIDENT_TYPES, Flow
from herald.models import Approval, EventRow, Incident, utcnow

log = logging.getLogger(__name__)

Ingest = Callable[[Session, EventRow], str]  # -> the event's status: received, grouped or refused
Audience = Callable[[Session, EventRow, dict[str, Any]], None]  # adds to the enrichment in place
Body = Callable[[str, dict[str, Any]], str]  # (change, data) -> the notification's body
Headline = Callable[[str, dict[str, Any], dict[str, Any]], str]  # (change, data, enrichment) -> title


# --- ingest ---------------------------------------------------------------------------------------

def link_incident(s: Session, row: EventRow) -> str:
    """An event about an incident herald opened itself (credential expired, escalation step) joins it."""
    if row.data.get("incident_id") is not None:
        row.incident_id = incidents.existing_id(s, row.data["incident_id"])
    return "received"


def _failure(s: Session, row: EventRow) -> str:
    """A failure opens or joins the incident of its dedup key; a recovery closes it."""
    assert row.dedup_key is not None
    if row.type in INCIDENT_TYPES:
        incident, tell = incidents.open_or_join(s, row.dedup_key, environment=row.environment,
                                                title=f"{row.data['flow']}: {row.type}", severity=row.severity,
                                                actor="herald", event_id=str(row.id))
        row.incident_id = incident.id
        if tell:
            return "received"
        row.status = "grouped"  # joined, no worse: nobody is told twice
        return "grouped"
    if row.type == "flow.recovered":
        closed = incidents.close(s, row.dedup_key, actor=row.source, action="incident.recovered",
                                 event_id=str(row.id))
        if closed is not None:
            row.incident_id = closed.id
        return "received"
    return link_incident(s, row)


def _approval(s: Session, row: EventRow) -> str:
    approvals.request(s, row.id, row.data)
    return "received"


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


def _answer_incident(s: Session, row: EventRow, action: str) -> str:
    data = row.data
    incident = incidents.get(s, data["incident_id"])
    if incident is None:
        return _refuse(s, row, f"incident.{action}", "incident", data["incident_id"],
                       f"incident {data['incident_id']} does not exist")
    if action not in incidents.ANSWERS:
        return _refuse(s, row, f"incident.{action}", "incident", incident.id,
                       f"{row.type} does not apply to an incident")
    row.incident_id = incident.id
    incidents.answer(s, incident, action, data["responder"], assignee=data.get("assignee"),
                     comment=data.get("comment"), event_id=str(row.id))
    return "received"


def _answer_approval(s: Session, row: EventRow, action: str) -> str:
    data = row.data
    decision = approvals.DECISIONS.get(action)
    approval = approvals.get(s, data["approval_id"])
    if approval is None:
        return _refuse(s, row, f"approval.{decision or action}", "approval", data["approval_id"],
                       f"approval {data['approval_id']} does not exist")
    if decision is None:
        return _refuse(s, row, f"approval.{action}", "approval", approval.id,
                       f"{row.type} does not apply to an approval")
    refused = approvals.vote(s, approval, data["responder"], decision, comment=data.get("comment"),
                             event_id=str(row.id))
    if refused:
        return _refuse(s, row, f"approval.{decision}", "approval", approval.id, refused)
    return "received"


def _answer(s: Session, row: EventRow) -> str:
    """Write an answer back to the incident or approval it names.

    An answer that cannot apply (to something that does not exist, an action that does not fit it,
    or from a person who may not answer) is refused with its reason (:func:`_refuse`).
    """
    action = row.type.removeprefix("response.")
    if row.data.get("incident_id") is not None:
        return _answer_incident(s, row, action)
    return _answer_approval(s, row, action)


# --- audience (enrich) ----------------------------------------------------------------------------

def no_audience(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    """Nothing beyond the owners of the event's subjects."""


def _credential_owner(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    owners = enrichment["owners"]
    if row.data.get("owner") and row.data["owner"] not in owners:
        owners.append(str(row.data["owner"]))  # the inventory's own owner, for credentials not in the directory


def _requester(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    enrichment["requester"] = row.data["requester"]


def _answered(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    """Answers go back to the audience of what they answer, and to an approval's requester."""
    data = row.data
    if data.get("approval_id") is not None:
        approval = s.get(Approval, data["approval_id"])
        if approval is not None:
            origin = s.get(EventRow, approval.event_id)
            enrichment["requester"] = approval.requester
            enrichment["approval"] = {"id": approval.id, "status": approval.status, "target": approval.target}
            enrichment["owners"] = (origin.enrichment or {}).get("owners", []) if origin else []
    if data.get("incident_id") is not None:
        incident = s.get(Incident, data["incident_id"])
        if incident is not None:
            enrichment["incident"] = {"id": incident.id, "status": incident.status,
                                      "assignee": incident.assignee, "title": incident.title}
            first = incidents.first_event(s, incident.id)
            enrichment["owners"] = (first.enrichment or {}).get("owners", []) if first else []


# --- the table ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FlowSpec:
    """What one flow does differently at each stage."""

    flow: Flow
    body: Body
    # the data field naming what an event is about (the title ends with it); None: nothing to name
    name_field: str | None = None
    # (directory resource kind, data field): the resources whose owners are the event's audience
    subjects: tuple[tuple[str, str], ...] = ()
    ingest: Ingest = link_incident
    audience: Audience = no_audience
    # replaces the title after the environment (an answer says who did what); None: the type's summary
    headline: Headline | None = None


FLOWS: dict[str, FlowSpec] = {spec.flow.value: spec for spec in [
    FlowSpec(flow=Flow.artifact, body=wording.artifact_body, name_field="artifact",
             subjects=(("artifact", "artifact"),)),
    FlowSpec(flow=Flow.failure, body=wording.failure_body, name_field="flow",
             subjects=(("flow", "flow"), ("credential", "credential")), ingest=_failure),
    FlowSpec(flow=Flow.approval, body=wording.approval_body, name_field="target",
             subjects=(("artifact", "target"), ("application", "target")), ingest=_approval, audience=_requester),
    FlowSpec(flow=Flow.business, body=wording.business_body, name_field="reference",
             subjects=(("topic", "topic"),)),
    FlowSpec(flow=Flow.credential, body=wording.credential_body, name_field="credential",
             subjects=(("credential", "credential"),), audience=_credential_owner),
    FlowSpec(flow=Flow.operations, body=wording.operations_body, name_field="resource",
             subjects=(("queue", "resource"), ("flow", "resource"), ("application", "resource"))),
    FlowSpec(flow=Flow.response, body=wording.answer_body, ingest=_answer, audience=_answered,
             headline=wording.answer_headline),
]}
