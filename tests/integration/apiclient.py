"""What the API tests share: the app in-process on the session's real Postgres and Redis, and keys to call it with."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from herald import db
from herald.audit import audit
from herald.models import Answer, Approval, EventRow, Incident, Notification


def api_client() -> Iterator[TestClient]:
    """The body of each module's ``client`` fixture (which also asks for ``clean``)."""
    from api import create_app

    # raise_server_exceptions=False: a bug answers 500 as it would to a real client, and the test sees it
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def make_key(environment: str, scope: str) -> str:
    from herald import db, keys

    with db.session() as s:
        return keys.create(s, environment=environment, scope=scope, label="test")[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(person_id: str) -> str:
    """A session token for a directory person, through a one-time link as a person's app gets one."""
    from herald import db, signin

    with db.session() as s:
        link = signin.create_link(s, person_id)
    with db.session() as s:
        return signin.exchange_link(s, link)


# --- what there is to read and answer: rows as the pipeline leaves them ------------------------------------

NOW = datetime.now(UTC)


def event(environment: str, type: str = "flow.failed", **fields: Any) -> EventRow:
    flow = "approval" if type == "approval.requested" else "failure"
    return EventRow(id=uuid.uuid4(), type=type, flow=flow, source="urn:test", environment=environment,
                    severity="error", idempotency_key=str(uuid.uuid4()), occurred_at=NOW, status="delivered",
                    data=fields.pop("data", {"flow": "orders"}), **fields)


def incident(environment: str, status: str = "open", notify: str = "alice") -> tuple[int, uuid.UUID]:
    """An incident of one environment, the event that opened it, alice notified; (incident id, event id)."""
    with db.session() as s:
        row = Incident(dedup_key=f"flow:orders:{uuid.uuid4()}", environment=environment, title="orders failed",
                       subject="orders", severity="error", status=status)
        s.add(row)
        s.flush()
        opened = event(environment, incident_id=row.id)
        s.add(opened)
        s.flush()
        s.add(Notification(event_id=opened.id, person_id=notify, route="test", reason="owner"))
        audit(s, "herald", "incident.opened", "incident", row.id, event_id=str(opened.id))
        s.add(Answer(environment=environment, subject_type="incident", subject_id=row.id, action="acknowledge",
                     person_id="bruno", via="producer", outcome="refused", reason="bruno was not notified"))
        return row.id, opened.id


def approval(environment: str, requester: str = "dana", status: str = "pending") -> int:
    with db.session() as s:
        requested = event(environment, "approval.requested", data={"target": "billing-api"})
        s.add(requested)
        s.flush()
        row = Approval(event_id=requested.id, request_kind="api", target="billing-api", requester=requester,
                       quorum=1, expires_at=NOW + timedelta(hours=1), status=status)
        s.add(row)
        s.add(Notification(event_id=requested.id, person_id="alice", route="test", reason="approver"))
        s.flush()
        return row.id
