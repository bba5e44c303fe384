"""POST /v1/actions: an action token from a push applies its answer once; a bad token changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from herald import actions, db
from herald.models import Answer, Approval, AuditLog, Incident, Notification
from herald.settings import get_settings
from tests.integration.apiclient import NOW, api_client, approval, bearer, incident, make_key, sign_in


@pytest.fixture
def client(sample_directory: None) -> Iterator[TestClient]:
    yield from api_client()


def my_tokens(client: TestClient, person: str = "alice") -> dict[str, str]:
    """The tokens of the person's first open notification, as their app lists them."""
    listed = client.get("/v1/me/notifications", headers=bearer(sign_in(person))).json()
    return dict(listed[0]["actions"])


def answers() -> list[tuple[str, str, str, str | None]]:
    with db.session() as s:
        return [(a.person_id, a.action, a.outcome, a.via) for a in s.scalars(select(Answer).where(
            Answer.via == "token").order_by(Answer.id))]


def notification_of(event_id: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(Notification.id).where(Notification.event_id == event_id)) or 0)


def test_a_token_acknowledges_the_incident_once(client: TestClient) -> None:
    incident_id, _ = incident("dev")
    token = my_tokens(client)["acknowledge"]
    answer = client.post("/v1/actions", json={"token": token, "comment": "on it"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["applied"] is True
    with db.session() as s:
        row = s.get_one(Incident, incident_id)
        assert (row.status, row.assignee) == ("acknowledged", "alice")
    assert answers() == [("alice", "acknowledge", "applied", "token")]

    again = client.post("/v1/actions", json={"token": token})
    assert again.status_code == 409
    assert set(again.json()) >= {"error", "reason"}
    assert answers() == [("alice", "acknowledge", "applied", "token")]


@pytest.mark.parametrize("tamper, status", [
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), 401),  # the signature
    (lambda t: t.split(".")[0] + ".W10." + t.split(".")[2], 401),  # the claims
    (lambda t: "nokey." + t.split(".", 1)[1], 401),  # an unknown key id
    (lambda t: "not a token", 400),
])
def test_a_tampered_or_malformed_token_changes_nothing(client: TestClient, tamper: Callable[[str], str],
                                                      status: int) -> None:
    incident_id, _ = incident("dev")
    token = my_tokens(client)["resolve"]
    answer = client.post("/v1/actions", json={"token": tamper(token)})
    assert answer.status_code == status, answer.text
    assert token not in answer.text
    with db.session() as s:
        assert s.get_one(Incident, incident_id).status == "open"
    assert answers() == []


def test_an_expired_token_is_410(client: TestClient) -> None:
    _, event_id = incident("dev")
    token = actions.mint(notification_of(event_id), "alice", "acknowledge", NOW - timedelta(minutes=1))
    answer = client.post("/v1/actions", json={"token": token})
    assert answer.status_code == 410
    assert answers() == []


def test_a_token_signed_by_a_removed_key_is_refused(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    _, event_id = incident("dev")
    monkeypatch.setenv("HERALD_ACTION_KEYS", "old:" + "o" * 40)
    get_settings.cache_clear()
    token = actions.mint(notification_of(event_id), "alice", "acknowledge", NOW + timedelta(hours=1))
    monkeypatch.setenv("HERALD_ACTION_KEYS", "new:" + "n" * 40)  # rotated, and the old key removed
    get_settings.cache_clear()
    try:
        answer = client.post("/v1/actions", json={"token": token})
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert answer.status_code == 401
    assert answers() == []


def test_a_refused_answer_is_recorded_and_answered_with_its_reason(client: TestClient) -> None:
    approval_id = approval("prod", requester="alice")  # alice cannot vote on her own request
    with db.session() as s:
        event_id = s.get_one(Approval, approval_id).event_id
    token = actions.mint(notification_of(event_id), "alice", "approve", NOW + timedelta(hours=1))
    answer = client.post("/v1/actions", json={"token": token})
    assert answer.status_code == 403
    assert "requester" in answer.json()["reason"]
    assert answers() == [("alice", "approve", "refused", "token")]
    with db.session() as s:
        audited = s.scalar(select(func.count()).select_from(AuditLog).where(
            AuditLog.subject_type == "approval", AuditLog.subject_id == str(approval_id)))
    assert audited == 1  # the approval itself has no audit row yet: this one is the refusal's


def test_a_comment_postgres_cannot_store_is_422(client: TestClient) -> None:
    incident("dev")
    token = my_tokens(client)["acknowledge"]
    answer = client.post("/v1/actions", json={"token": token, "comment": "a\u0000b"})
    assert answer.status_code == 422
    assert answers() == []


# --- POST /v1/answers: integration code on a person's behalf ----------------------------------------------


def answer_on_behalf(client: TestClient, key: str, incident_id: int, person: str) -> Any:
    return client.post("/v1/answers", headers=bearer(key), json={
        "subject_type": "incident", "subject_id": incident_id, "action": "acknowledge", "on_behalf_of": person})


def test_an_answers_key_acknowledges_on_a_persons_behalf_and_both_are_recorded(client: TestClient) -> None:
    incident_id, _ = incident("dev")
    key = make_key("dev", "answers")
    answer = answer_on_behalf(client, key, incident_id, "ALICE@example.com")
    assert answer.status_code == 200, answer.text
    with db.session() as s:
        row = s.scalars(select(Answer).where(Answer.via == "api")).one()
        assert (row.person_id, row.outcome, row.on_behalf_of, row.key_id) == \
            ("alice", "applied", "ALICE@example.com", key.split("_")[1])
        assert s.get_one(Incident, incident_id).status == "acknowledged"


def test_an_answers_key_never_answers_in_another_environment_or_as_a_stranger(client: TestClient) -> None:
    prod_incident, _ = incident("prod")
    dev_incident, _ = incident("dev")
    key = make_key("dev", "answers")
    assert answer_on_behalf(client, key, prod_incident, "alice").status_code == 404
    assert answer_on_behalf(client, key, dev_incident, "mallory").status_code == 403
    assert answer_on_behalf(client, make_key("dev", "publish"), dev_incident, "alice").status_code == 403
    with db.session() as s:
        assert s.get_one(Incident, prod_incident).status == "open"
        assert s.get_one(Incident, dev_incident).status == "open"
        refused = s.scalars(select(Answer.outcome).where(Answer.via == "api")).all()
    assert refused == ["refused", "refused"]  # the publish key never got to answer
