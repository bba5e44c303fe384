"""enrich: attach owners, environment policy and artifact / flow / credential metadata."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import db
from herald.app import app
from herald.errors import PoisonMessage
from herald.flows import FLOWS
from herald.lanes import lane_of, queue_for
from herald.models import EventRow, Resource, utcnow
from herald.taskbase import HeraldTask
from workers.ingest import event_uuid

log = logging.getLogger(__name__)


@app.task(base=HeraldTask, name="herald.enrich")
def enrich(event_id: str) -> str:
    with db.session() as s:
        event = s.get(EventRow, event_uuid(event_id), with_for_update=True)
        if event is None:
            raise PoisonMessage(f"event {event_id} does not exist")
        if event.status == "received":
            event.enrichment = {**(event.enrichment or {}), **describe(s, event)}
            event.status, event.status_at = "enriched", utcnow()
        status, lane = event.status, lane_of(event.type, event.source, event.severity)
    if status == "enriched":  # also when a redelivered task finds the work done: resolve is idempotent
        app.send_task("herald.resolve", args=[event_id], queue=queue_for("herald.resolve", lane))
    return status


def _lookup(s: Session, kind: str, name: str, environment: str) -> Resource | None:
    rows = s.scalars(select(Resource).where(Resource.kind == kind, Resource.name == name,
                                            Resource.environment.in_([environment, "*"])))
    # an entry for this environment wins over the catch-all
    return min(rows, key=lambda r: r.environment == "*", default=None)


def describe(s: Session, event: EventRow) -> dict[str, Any]:
    """The owners of the resources the event names, its environment, and what its flow adds (herald/flows.py)."""
    spec = FLOWS[event.flow]
    data = event.data
    owners: list[str] = []
    resources: list[dict[str, Any]] = []
    for kind, field in spec.subjects:
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
    spec.audience(s, event, enrichment)
    return enrichment
