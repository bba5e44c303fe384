"""The read endpoints (a read key, its environment only) and a person's open notifications with their actions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.integration.apiclient import api_client, approval, bearer, incident, make_key, sign_in


@pytest.fixture
def client(sample_directory: None) -> Iterator[TestClient]:
    yield from api_client()  # conftest gives the session an action-token key


def test_a_read_key_reads_an_incident_with_its_answers_and_audit_trail(client: TestClient) -> None:
    incident_id, event_id = incident("dev")
    answer = client.get(f"/v1/incidents/{incident_id}", headers=bearer(make_key("dev", "read")))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["subject"], body["events"]) == ("open", "orders", [str(event_id)])
    assert [a["action"] for a in body["audit"]] == ["incident.opened"]
    assert [(a["person_id"], a["outcome"], a["reason"]) for a in body["answers"]] == \
        [("bruno", "refused", "bruno was not notified")]


def test_reads_stay_in_the_keys_environment(client: TestClient) -> None:
    incident_id, event_id = incident("prod")
    approval_id = approval("prod")
    dev, prod = bearer(make_key("dev", "read")), bearer(make_key("prod", "read"))
    for path in (f"/v1/incidents/{incident_id}", f"/v1/events/{event_id}", f"/v1/approvals/{approval_id}"):
        refused = client.get(path, headers=dev)
        assert refused.status_code == 404, path
        assert set(refused.json()) == {"error", "reason"}
        assert client.get(path, headers=prod).status_code == 200, path
    event_body = client.get(f"/v1/events/{event_id}", headers=prod).json()
    assert event_body["incident_id"] == incident_id
    assert [n["person_id"] for n in event_body["notifications"]] == ["alice"]


def test_reads_need_a_read_key(client: TestClient) -> None:
    incident_id, _ = incident("dev")
    path = f"/v1/incidents/{incident_id}"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=bearer(make_key("dev", "publish"))).status_code == 403
    assert client.get(path, headers=bearer(sign_in("alice"))).status_code == 401  # a person is not a key


def test_unknown_or_out_of_range_ids_are_4xx(client: TestClient) -> None:
    key = bearer(make_key("dev", "read"))
    assert client.get("/v1/incidents/424242", headers=key).status_code == 404
    assert client.get(f"/v1/approvals/{2**63}", headers=key).status_code == 422
    assert client.get("/v1/events/not-a-uuid", headers=key).status_code == 422
    assert client.get(f"/v1/events/{uuid.uuid4()}", headers=key).status_code == 404


def test_my_notifications_list_open_subjects_with_action_tokens(client: TestClient) -> None:
    from herald import actions

    open_id, _ = incident("dev")
    incident("dev", status="resolved")
    pending = approval("prod")
    approval("prod", status="approved")
    own = approval("prod", requester="alice")  # alice asked: she has no vote
    incident("dev", notify="bruno")
    answer = client.get("/v1/me/notifications", headers=bearer(sign_in("alice")))
    assert answer.status_code == 200, answer.text
    items = {(i["subject"]["type"], i["subject"]["id"]): i for i in answer.json()}
    assert set(items) == {("incident", open_id), ("approval", pending), ("approval", own)}
    tokens = items[("incident", open_id)]["actions"]
    assert set(tokens) == {"acknowledge", "resolve", "follow_up"}
    claims = actions.verify(tokens["acknowledge"])
    assert (claims.person_id, claims.action, claims.notification_id) == \
        ("alice", "acknowledge", items[("incident", open_id)]["notification_id"])
    assert set(items[("approval", pending)]["actions"]) == {"approve", "reject", "request_info"}
    assert items[("approval", own)]["actions"] == {}


def test_my_notifications_need_a_signed_in_person(client: TestClient) -> None:
    assert client.get("/v1/me/notifications").status_code == 401
    assert client.get("/v1/me/notifications", headers=bearer(make_key("dev", "read"))).status_code == 401


def test_a_sign_in_link_is_exchanged_once_for_a_session(client: TestClient) -> None:
    from herald import db, signin

    with db.session() as s:
        link = signin.create_link(s, "alice")
    answer = client.post("/v1/sessions", json={"link": link})
    assert answer.status_code == 201, answer.text
    assert answer.json()["person_id"] == "alice"
    session = answer.json()["token"]
    assert client.get("/v1/me/notifications", headers=bearer(session)).status_code == 200
    again = client.post("/v1/sessions", json={"link": link})
    assert again.status_code == 401 and link not in again.text
    assert client.get("/v1/me/notifications", headers=bearer(link)).status_code == 401
