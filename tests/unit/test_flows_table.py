"""The per-flow table (herald/flows.py): one entry per flow, and what each entry does at ingest, enrich and render."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.events import EVENT_TYPES, Flow
from herald.flows import FLOWS
from herald.models import Approval, EventRow, Incident, utcnow
from herald.payload import render
from tests.unit.domain_helpers import audited, memory_session, stored_event
from workers.enrich import describe


@pytest.fixture
def s() -> Iterator[Session]:
    with memory_session() as session:
        yield session


def test_every_flow_has_one_entry_and_every_event_type_a_flow_in_the_table() -> None:
    assert set(FLOWS) == {f.value for f in Flow}
    assert all(spec.flow.value == name for name, spec in FLOWS.items())
    assert {t.flow.value for t in EVENT_TYPES.values()} <= set(FLOWS)


def ingest(s: Session, type: str, data: dict[str, Any], **fields: Any) -> tuple[str, EventRow]:
    row = stored_event(s, type, data, **fields)
    return FLOWS[row.flow].ingest(s, row), row


def test_failures_group_into_one_incident_and_a_recovery_closes_it(s: Session) -> None:
    first, row1 = ingest(s, "flow.failed", {"flow": "orders-to-erp"})
    second, row2 = ingest(s, "flow.failed", {"flow": "orders-to-erp"})
    assert (first, second) == ("received", "grouped")
    assert row1.incident_id == row2.incident_id is not None and row2.status == "grouped"
    incident = s.get_one(Incident, row1.incident_id)
    assert (incident.title, incident.event_count) == ("orders-to-erp: flow.failed", 2)
    worse, _ = ingest(s, "flow.retry_exhausted", {"flow": "orders-to-erp"})
    assert worse == "received"  # critical: told again
    recovered, row3 = ingest(s, "flow.recovered", {"flow": "orders-to-erp"})
    assert recovered == "received" and row3.incident_id == incident.id and incident.status == "resolved"
    assert audited(s)[-1] == ("herald/producer", "incident.recovered", str(incident.id))


def test_an_approval_request_opens_an_approval(s: Session) -> None:
    expires = (utcnow() + timedelta(hours=1)).isoformat()
    status, row = ingest(s, "approval.requested", {"request_kind": "api", "target": "orders-api",
                                                   "requester": "alice", "quorum": 2, "expires_at": expires})
    assert status == "received"
    approval = s.scalars(select(Approval)).one()
    assert (approval.event_id, approval.requester, approval.quorum) == (row.id, "alice", 2)


def test_a_response_event_is_accepted_only_for_an_answer_a_door_applied(s: Session) -> None:
    _, failure = ingest(s, "flow.failed", {"flow": "orders-to-erp"})
    status, forged = ingest(s, "response.acknowledged", {"responder": "chen", "incident_id": failure.incident_id})
    assert status == "refused" and forged.status == "refused"
    assert s.get_one(Incident, failure.incident_id).status == "open"
    assert audited(s)[-1] == ("chen", "response.acknowledged.refused", str(failure.incident_id))


def test_an_event_naming_an_incident_herald_opened_joins_it(s: Session) -> None:
    _, failure = ingest(s, "flow.failed", {"flow": "orders-to-erp"})
    _, page = ingest(s, "flow.escalated", {"flow": "orders-to-erp", "incident_id": failure.incident_id, "level": 1})
    assert page.incident_id == failure.incident_id
    expires = (utcnow() - timedelta(days=1)).isoformat()
    _, expired = ingest(s, "credential.expired", {"credential": "erp-cert", "kind": "certificate",
                                                  "expires_at": expires, "incident_id": 999})
    assert expired.incident_id is None  # no such incident: nothing to join


def test_enrich_adds_what_each_flow_needs_for_its_audience(s: Session) -> None:
    expires = (utcnow() + timedelta(hours=1)).isoformat()
    _, request = ingest(s, "approval.requested", {"request_kind": "api", "target": "orders-api",
                                                  "requester": "alice", "expires_at": expires})
    request.enrichment = {**describe(s, request), "owners": ["team:integration-leads"]}
    assert describe(s, request)["requester"] == "alice"
    _, cred = ingest(s, "credential.expiring", {"credential": "erp-cert", "kind": "certificate",
                                                "expires_at": expires, "owner": "person:alice"})
    assert describe(s, cred)["owners"] == ["person:alice"]
    assert describe(s, request)["silence"] == ["alice"]  # never told of their own request


@pytest.mark.parametrize(("event_type", "data", "title"), [
    ("artifact.deployed", {"artifact": "orders-api", "kind": "api"}, "[prod] artifact deployed: orders-api"),
    ("flow.failed", {"flow": "orders-to-erp"}, "[prod] managed flow failed: orders-to-erp"),
    ("business.order_submitted", {"topic": "orders.eu", "reference": "PO-1"}, "[prod] order submitted: PO-1"),
    ("ops.queue_backlog", {"resource": "edi-inbound", "metric": "depth", "value": 10},
     "[prod] queue backlog: edi-inbound"),
    ("response.acknowledged", {"responder": "chen", "incident_id": 7}, "[prod] acknowledged by chen: incident #7"),
    ("response.approved", {"responder": "dana", "responder_name": "Dana", "approval_id": 3, "status": "approved",
                           "approvals": 2, "quorum": 2}, "[prod] approved (2 of 2): approval #3"),
    ("approval.expired", {"request_kind": "api", "target": "orders-api", "requester": "bruno", "quorum": 2,
                          "expires_at": "2026-12-01T12:00:00+00:00", "approval_id": 3, "approvals": 1},
     "[prod] approval expired: orders-api"),
])
def test_each_flow_names_its_subject_in_the_title(event_type: str, data: dict[str, object], title: str) -> None:
    flow = EVENT_TYPES[event_type].flow.value
    got, body, _, _ = render(event_id="e", event_type=event_type, flow=flow, environment="prod", severity="error",
                             data=data, notification_id=1, ids_only=False)
    assert got == title and body
