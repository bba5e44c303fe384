"""enrich: attach owners, environment policy and artifact / flow / credential metadata."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import db
from herald.app import app
from herald.errors import PoisonMessage
from herald.lanes import is_ops, queue_for
from herald.models import Approval, EventRow, Incident, Resource, utcnow
from herald.taskbase import HeraldTask
from workers.ingest import event_uuid

log = logging.getLogger(__name__)

# Which data field names the resource an event is about, per flow.
SUBJECTS: dict[str, list[tuple[str, str]]] = {
    "artifact": [("artifact", "artifact")],
    "failure": [("flow", "flow"), ("credential", "credential")],
    "approval": [("artifact", "target"), ("application", "target")],
    "business": [("topic", "topic")],
    "credential": [("credential", "credential")],
    "operations": [("queue", "resource"), ("flow", "resource"), ("application", "resource")],
}


@app.task(base=HeraldTask, name="herald.enrich")
def enrich(event_id: str) -> str:
    with db.session() as s:
        event = s.get(EventRow, event_uuid(event_id), with_for_update=True)
        if event is None:
            raise PoisonMessage(f"event {event_id} does not exist")
        if event.status == "received":
            event.enrichment = {**(event.enrichment or {}), **describe(s, event)}
            event.status, event.status_at = "enriched", utcnow()
        status, ops = event.status, is_ops(event.type, event.source)
    if status == "enriched":  # also when a redelivered task finds the work done: resolve is idempotent
        app.send_task("herald.resolve", args=[event_id], queue=queue_for("herald.resolve", ops=ops))
    return status


def _lookup(s: Session, kind: str, name: str, environment: str) -> Resource | None:
    rows = s.scalars(select(Resource).where(Resource.kind == kind, Resource.name == name,
                                            Resource.environment.in_([environment, "*"])))
    # an entry for this environment wins over the catch-all
    return min(rows, key=lambda r: r.environment == "*", default=None)


def describe(s: Session, event: EventRow) -> dict[str, Any]:
    data = event.data
    owners: list[str] = []
    resources: list[dict[str, Any]] = []
    for kind, field in SUBJECTS.get(event.flow, []):
        name = data.get(field)
        if not name:
            continue
        resource = _lookup(s, kind, str(name), event.environment)
        if resource is not None:
            owners += [o for o in resource.owners if o not in owners]
            resources.append({"kind": kind, "name": resource.name, "meta": resource.meta})
    enrichment: dict[str, Any] = {
        "owners": owners,
        "resources": resources,
        "environment": {"name": event.environment, "production": event.environment == "prod"},
    }
    if event.flow == "credential" and data.get("owner") and data["owner"] not in owners:
        owners.append(str(data["owner"]))  # the inventory's own owner, for credentials not in the directory
    if event.flow == "approval":
        enrichment["requester"] = data["requester"]
    if event.flow == "response":
        # Answers go back to the audience of what they answer, and to an approval's requester.
        if data.get("approval_id") is not None:
            approval = s.get(Approval, data["approval_id"])
            if approval is not None:
                origin = s.get(EventRow, approval.event_id)
                enrichment["requester"] = approval.requester
                enrichment["approval"] = {"id": approval.id, "status": approval.status,
                                          "target": approval.target}
                enrichment["owners"] = (origin.enrichment or {}).get("owners", []) if origin else []
        if data.get("incident_id") is not None:
            incident = s.get(Incident, data["incident_id"])
            if incident is not None:
                enrichment["incident"] = {"id": incident.id, "status": incident.status,
                                          "assignee": incident.assignee, "title": incident.title}
                first = s.scalar(select(EventRow).where(EventRow.incident_id == incident.id)
                                 .order_by(EventRow.received_at).limit(1))
                enrichment["owners"] = (first.enrichment or {}).get("owners", []) if first else []
    return enrichment
