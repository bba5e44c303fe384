"""The per-flow table: what differs between the seven flows, in one entry each.

Every event goes through the same pipeline; a flow's entry says what its stages do differently:

- ``ingest``: what a new event does besides its row (open or join an incident, open an approval,
  accept an answer a door applied), returning the event's pipeline status;
- ``subjects`` and ``audience``: which directory resources name its owners, and what else enrich
  adds for routing (an approval's requester, the people an answer tells and never tells);
- ``name_field``, ``body`` and ``headline``: what its notification says (herald/wording.py).

A new flow is its event types in herald/events.py and one entry in :data:`FLOWS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import answers, approvals, escalation, incidents, wording
from herald.answers import ACTIONS
from herald.audit import audit
from herald.events import INCIDENT_TYPES, Flow
from herald.models import Answer, Approval, EventRow, Incident, utcnow
from herald.signin import resolve_identity

log = logging.getLogger(__name__)

Ingest = Callable[[Session, EventRow], str]  # -> the event's status: received, grouped or refused
Audience = Callable[[Session, EventRow, dict[str, Any]], None]  # adds to the enrichment in place
Body = Callable[[str, dict[str, Any]], str]  # (change, data) -> the notification's body
Headline = Callable[[str, dict[str, Any], dict[str, Any]], str]  # (change, data, enrichment) -> title


# --- ingest ---------------------------------------------------------------------------------------

def link_incident(s: Session, row: EventRow) -> str:
    """An event about an incident herald opened itself (credential expired, escalation step) joins it.

    It takes the incident's dedup key: its notifications replace the incident's earlier ones
    (the collapse id / Topic, herald/payload.py ``collapse_key``), as an answer's will.
    """
    if row.data.get("incident_id") is not None:
        incident = incidents.existing(s, row.data["incident_id"])
        if incident is not None:
            row.incident_id, row.dedup_key = incident.id, row.dedup_key or incident.dedup_key
    return "received"


def _failure(s: Session, row: EventRow) -> str:
    """A failure opens or joins the incident of its dedup key; a recovery closes its own flow's."""
    assert row.dedup_key is not None
    if row.type in INCIDENT_TYPES:
        incident, tell = incidents.open_or_join(s, row.dedup_key, environment=row.environment,
                                                title=f"{row.data['flow']}: {row.type}", severity=row.severity,
                                                actor="herald", subject=str(row.data["flow"]), event_id=str(row.id))
        row.incident_id = incident.id
        if tell:
            return "received"
        row.status = "grouped"  # joined, no worse: nobody is told twice
        return "grouped"
    if row.type == "flow.recovered":
        # only the incident of this flow in this environment: a recovery of another flow carrying its
        # dedup key closes nothing
        closed = incidents.close(s, row.dedup_key, actor=row.source, action="incident.recovered",
                                 subject=str(row.data["flow"]), environment=row.environment, event_id=str(row.id))
        if closed is not None:
            row.incident_id = closed.id
        return "received"
    if row.type == "flow.escalated" and row.source == escalation.SOURCE:
        escalation.link_event(s, row)  # a chain step's page: its page rows name this event
    return link_incident(s, row)


def approval_key(approval_id: int) -> str:
    """The collapse key of an approval's notifications: its decision or expiry replaces the request."""
    return f"approval:{approval_id}"


def _approval(s: Session, row: EventRow) -> str:
    if row.type == "approval.requested":
        approval = approvals.request(s, row.id, row.data)
        s.flush()
        row.dedup_key = approval_key(approval.id)
    elif row.data.get("approval_id") is not None:  # approval.expired: replaces the request
        row.dedup_key = approval_key(int(row.data["approval_id"]))
    return "received"


def _refuse(s: Session, row: EventRow, reason: str) -> str:
    """Refuse a response event for good: recorded on the event and in the audit log, never a dead letter."""
    subject_type = "incident" if row.data.get("incident_id") is not None else "approval"
    audit(s, str(row.data.get("responder")), f"{row.type}.refused", subject_type,
          row.data.get(f"{subject_type}_id"), reason=reason, event_id=str(row.id), source=row.source)
    row.status, row.status_at = "refused", utcnow()
    row.enrichment = {"refused": reason}
    log.warning("response event %s refused: %s", row.id, reason, extra={"event_id": str(row.id)})
    return "refused"


def _answer(s: Session, row: EventRow) -> str:
    """A response event tells the others of an answer a door applied (herald/answers.py); nothing more.

    It is accepted only when an applied answer names it (its id, subject, action and person): a
    ``response.*`` event sent any other way (``herald publish``, Flower's ``herald.ingest``, a replayed
    dead letter) changes nothing and is refused with its reason.
    """
    answer = s.scalar(select(Answer).where(Answer.event_id == row.id, Answer.outcome == "applied"))
    change = row.type.removeprefix("response.")
    subject_type = "incident" if row.data.get("incident_id") is not None else "approval"
    if answer is None or answer.subject_type != subject_type or \
            answer.subject_id != row.data.get(f"{subject_type}_id") or \
            answer.person_id != row.data.get("responder") or \
            ACTIONS.get(subject_type, {}).get(answer.action) != change:
        return _refuse(s, row, "answers come only through a door (an action token, the API, the producer "
                               "library, the CLI); this response event names no applied answer")
    if subject_type == "incident":
        incident = s.get_one(Incident, answer.subject_id)
        row.incident_id = incident.id
        if _replaces(row):
            row.dedup_key = incident.dedup_key
    elif _replaces(row):
        row.dedup_key = approval_key(answer.subject_id)
    return "received"


def _replaces(row: EventRow) -> bool:
    """Whether an answer's notification replaces the one its people got: the incident was taken or
    closed, the approval decided. A follow-up, a request for information or a vote that decides
    nothing leaves the call to act in place."""
    change = row.type.removeprefix("response.")
    if row.data.get("incident_id") is not None:
        return change in ("acknowledged", "resolved")
    return str(row.data.get("status")) in ("approved", "rejected")


# --- audience (enrich) ----------------------------------------------------------------------------
# Besides the routes, an event's enrichment may name people to ``tell`` (person -> why) whatever the
# routes say, and people to ``silence`` (never told): workers/resolve.py applies both.

def no_audience(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    """Nothing beyond the owners of the event's subjects."""


def _chain(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    """Escalation chains (herald/escalation.py): the event that opened an incident starts the chain of the
    policy its matching route names (the owners are known now); a chain step's page is told to exactly the
    people its page rows name, and to nobody else (``only_tell``: workers/resolve.py walks no route)."""
    if row.type in INCIDENT_TYPES and row.incident_id is not None:
        incident = incidents.get(s, row.incident_id)
        if incident is None or incident.chain is not None or incident.status != "open":
            return
        first = incidents.first_event(s, incident.id)
        if first is None or first.id != row.id:
            return  # joined an open incident: its chain (or its legacy escalation) is already running
        policy = escalation.policy_for(s, event_type=row.type, environment=row.environment, severity=row.severity,
                                       owners=enrichment.get("owners", []), topic=row.data.get("topic"))
        if policy is not None:
            escalation.start(s, incident, policy)
            enrichment["escalation"] = {"policy": policy.id}
    elif row.type == "flow.escalated" and row.source == escalation.SOURCE:
        people = escalation.told_by_page(s, row)
        if people:
            why = f"escalation of incident #{row.data.get('incident_id')}: " + (
                "the new assignee" if row.data.get("step") == escalation.ASSIGNEE_STEP
                else f"step {int(row.data.get('step', 0)) + 1}, round {int(row.data.get('round', 0)) + 1}")
            enrichment["tell"] = {p: why for p in people}
            enrichment["only_tell"] = True


def _credential_owner(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    owners = enrichment["owners"]
    if row.data.get("owner") and row.data["owner"] not in owners:
        owners.append(str(row.data["owner"]))  # the inventory's own owner, for credentials not in the directory


def _requester_id(s: Session, requester: str) -> str:
    return resolve_identity(s, requester) or requester


def _requester(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    """A request never reaches its requester (under any of their names); its expiry reaches them and the approvers."""
    requester = _requester_id(s, str(row.data["requester"]))
    enrichment["requester"] = requester
    if row.type == "approval.requested":
        enrichment["silence"] = sorted({requester, str(row.data["requester"])})
        return
    approval = s.get(Approval, row.data.get("approval_id"))
    if approval is not None:  # approval.expired: the requester hears it; the approvers' requests are replaced
        tell = {p: f"asked to approve approval #{approval.id}" for p in answers.notified_of_approval(s, approval)}
        enrichment["tell"] = {**tell, requester: f"requester of approval #{approval.id}"}


def _answered(s: Session, row: EventRow, enrichment: dict[str, Any]) -> None:
    """An answer goes to the others of what it answers, never back to the person who answered.

    The people notified of the incident (or asked to approve) get their notification replaced when it
    was taken, closed or decided (see :func:`_replaces`); an approval's requester hears the decision
    (and a request for more information), not each vote. The routes may add more people.
    """
    data = row.data
    responder = str(data["responder"])
    silence = {responder}
    tell: dict[str, str] = {}
    if data.get("approval_id") is not None:
        approval = s.get(Approval, data["approval_id"])
        if approval is not None:
            origin = s.get(EventRow, approval.event_id)
            requester = _requester_id(s, approval.requester)
            enrichment["requester"] = requester
            enrichment["approval"] = {"id": approval.id, "status": approval.status, "target": approval.target}
            enrichment["owners"] = (origin.enrichment or {}).get("owners", []) if origin else []
            if _replaces(row):
                tell = {p: f"asked to approve approval #{approval.id}"
                        for p in answers.notified_of_approval(s, approval)}
            if _replaces(row) or row.type == "response.info_requested":
                tell[requester] = f"requester of approval #{approval.id}"
            else:
                silence.add(requester)
    if data.get("incident_id") is not None:
        incident = s.get(Incident, data["incident_id"])
        if incident is not None:
            enrichment["incident"] = {"id": incident.id, "status": incident.status,
                                      "assignee": incident.assignee, "title": incident.title}
            first = incidents.first_event(s, incident.id)
            enrichment["owners"] = (first.enrichment or {}).get("owners", []) if first else []
            if _replaces(row):
                tell = {p: f"notified of incident #{incident.id}"
                        for p in answers.notified_of_incident(s, incident.id)}
    enrichment["tell"] = {p: why for p, why in tell.items() if p not in silence}
    enrichment["silence"] = sorted(silence)


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
             subjects=(("flow", "flow"), ("credential", "credential")), ingest=_failure, audience=_chain),
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
