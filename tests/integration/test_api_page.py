"""/app/: the responder page a Web Push notification and a sign-in link open, and the VAPID key it subscribes with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from herald.settings import get_settings
from tests.integration.apiclient import api_client, approval, bearer, incident, sign_in
from tests.integration.conftest import ROOT


@pytest.fixture
def client(clean: None) -> Iterator[TestClient]:
    yield from api_client()


def test_the_page_and_its_scripts_are_served_under_a_strict_policy(client: TestClient) -> None:
    redirect = client.get("/app", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/app/"
    page = client.get("/app/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert '<script src="/app/app.js"' in page.text
    for path, needle in (("/app/app.js", "/v1/me/notifications"), ("/app/sw.js", "notificationclick"),
                         ("/app/app.css", "body")):
        served = client.get(path)
        assert served.status_code == 200 and needle in served.text, path
    assert "innerHTML" not in client.get("/app/app.js").text  # text nodes only
    assert client.get("/app/sw.js").headers["service-worker-allowed"] == "/app/"


def test_the_vapid_public_key_is_published_when_configured(client: TestClient, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from herald.channels import vapid

    assert client.get("/v1/webpush/key").status_code == 404
    public = vapid.generate(tmp_path / "vapid.pem")
    monkeypatch.setenv("HERALD_WEBPUSH_VAPID_KEY_FILE", str(tmp_path / "vapid.pem"))
    get_settings.cache_clear()
    try:
        answer = client.get("/v1/webpush/key")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert answer.status_code == 200 and answer.json() == {"key": public}
    assert "PRIVATE" not in answer.text


# --- what the page reads: who I am, quorum progress, notices, and what I answered --------------------------


@pytest.fixture
def people(sample_directory: None) -> Iterator[TestClient]:
    yield from api_client()


def test_the_page_files_are_package_data() -> None:
    import tomllib

    from api import page

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "static/*" in config["tool"]["setuptools"]["package-data"]["api"]
    for name, _ in page.FILES.values():
        assert (ROOT / "api" / "static" / name).is_file(), name


def test_me_and_the_quorum_progress_and_no_tokens_once_i_voted(people: TestClient) -> None:
    from herald import db
    from herald.models import Approval, ApprovalVote, Notification

    approval_id = approval("prod", requester="dana")
    with db.session() as s:
        row = s.get_one(Approval, approval_id)
        row.quorum = 2
        s.add(Notification(event_id=row.event_id, person_id="bruno", route="test", reason="approver"))
        s.add(ApprovalVote(approval_id=approval_id, person_id="bruno", decision="approve"))
    alice, bruno = bearer(sign_in("alice")), bearer(sign_in("bruno"))
    assert people.get("/v1/me", headers=alice).json() == {"person_id": "alice", "name": "Alice Martin"}
    [mine] = people.get("/v1/me/notifications", headers=alice).json()
    subject = mine["subject"]
    assert (subject["quorum"], subject["approvals"], subject["rejections"], subject["requester"],
            subject["my_vote"]) == (2, 1, 0, "dana", None)
    assert [v["person_id"] for v in subject["votes"]] == ["bruno"]
    assert set(mine["actions"]) == {"approve", "reject", "request_info"}
    [theirs] = people.get("/v1/me/notifications", headers=bruno).json()
    assert theirs["subject"]["my_vote"] == "approve" and theirs["actions"] == {}  # bruno voted: nothing left
    assert people.get("/v1/me", headers=bearer("hs_nobody")).status_code == 401


def test_an_incident_lists_its_assignee_and_escalation_and_my_answers_are_mine(people: TestClient) -> None:
    from herald import db
    from herald.models import Incident

    incident_id, _ = incident("prod")
    with db.session() as s:
        s.get_one(Incident, incident_id).escalation_level = 2
    alice = bearer(sign_in("alice"))
    [listed] = people.get("/v1/me/notifications", headers=alice).json()
    assert (listed["subject"]["assignee"], listed["subject"]["escalation_step"]) == (None, 2)
    assert listed["body"]
    token = listed["actions"]["acknowledge"]
    assert people.post("/v1/actions", json={"token": token, "comment": "on it"}).status_code == 200
    [answer] = people.get("/v1/me/answers", headers=alice).json()
    assert (answer["action"], answer["outcome"], answer["comment"], answer["subject_title"],
            answer["subject_status"]) == ("acknowledge", "applied", "on it", "orders failed", "acknowledged")
    # bruno's refused answer (apiclient.incident records one) is his, not alice's
    assert [(a["action"], a["outcome"], a["reason"]) for a in
            people.get("/v1/me/answers", headers=bearer(sign_in("bruno"))).json()] == [
        ("acknowledge", "refused", "bruno was not notified")]
    [relisted] = people.get("/v1/me/notifications", headers=alice).json()
    assert relisted["subject"]["assignee"] == "alice"


def test_notices_are_listed_until_cleared(people: TestClient) -> None:
    from herald import db
    from herald.models import Notification
    from tests.integration.apiclient import event

    def notify(type: str) -> None:
        with db.session() as s:
            row = event("prod", type, data={"resource": "edi-inbound", "metric": "depth"})
            row.flow = "operations"
            s.add(row)
            s.flush()
            s.add(Notification(event_id=row.id, person_id="alice", route="ops", reason="owner"))

    alice = bearer(sign_in("alice"))
    notify("ops.queue_backlog")
    [notice] = people.get("/v1/me/notifications", headers=alice).json()
    assert notice["subject"]["type"] == "notice" and notice["subject"]["title"] == "queue backlog: edi-inbound"
    assert notice["actions"] == {}
    notify("ops.queue_backlog_cleared")
    assert people.get("/v1/me/notifications", headers=alice).json() == []


def test_an_older_notification_offers_the_tokens_when_the_newest_only_told_me(people: TestClient) -> None:
    from herald import db
    from herald.models import Notification
    from tests.integration.apiclient import event

    incident_id, opened = incident("prod")
    with db.session() as s:
        older = s.scalar(select(Notification.id).where(Notification.event_id == opened))
        told = event("prod", "response.acknowledged", incident_id=incident_id, data={"responder": "bruno"})
        told.flow = "response"
        s.add(told)
        s.flush()
        s.add(Notification(event_id=told.id, person_id="alice", route="responses", reason="notified"))
    [listed] = people.get("/v1/me/notifications", headers=bearer(sign_in("alice"))).json()
    assert listed["event_type"] == "response.acknowledged" and listed["notification_ids"][1] == older
    assert set(listed["actions"]) == {"acknowledge", "resolve", "follow_up"}
