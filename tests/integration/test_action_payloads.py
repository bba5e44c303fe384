"""Action tokens in real pushes: an incident page and an approval request through the FCM, APNs and Web Push fakes.

Each test publishes one event to people whose devices point at the fakes, then reads what the fakes received
(the Web Push body as the browser decrypts it) and verifies every token: signed by herald, for the person whose
device got it, for that person's notification, for the action it is offered under.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import db, directory
from herald.actions import verify
from herald.models import Delivery, Device, Notification, utcnow
from herald.payload import ELLIPSIS
from producers import approval_requested, flow_failed, publish
from tests.integration.conftest import DATA_DIR, Workers, fresh_fakes, wait_until
from tests.integration.helpers import all_done, rows
from workers.deliver.delivery import claim

PUBLIC_URL = "https://herald.example.com"
CHEN_IPHONE = "c0" * 32  # APNs device tokens are hex
INCIDENT = ["acknowledge", "resolve", "follow_up"]
APPROVAL = ["approve", "reject", "request_info"]
# A long text of many-byte characters: what the payload must still fit around three tokens
LONG = "Timeout talking to the ERP 🔥 " * 130


@pytest.fixture
def fake(fakes: FakeProviders, clean: None) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    with herald_env({"HERALD_WEBPUSH_ALLOW_LOOPBACK": "true"}):
        yield fakes


def load_directory(subscription: dict[str, Any]) -> dict[str, str]:
    """chen has a phone on each channel, dana and bruno one Android phone; returns device token -> person."""
    spec = {
        "people": [
            {"id": "chen", "name": "Chen", "devices": [
                {"channel": "fcm", "token": "fcm-chen"},
                {"channel": "apns", "token": CHEN_IPHONE, "environment": "sandbox", "app": "com.example.portal"},
                {"channel": "webpush", "subscription": subscription}]},
            {"id": "dana", "name": "Dana", "devices": [{"channel": "fcm", "token": "fcm-dana"}]},
            {"id": "bruno", "name": "Bruno", "email": "bruno@example.com",
             "devices": [{"channel": "fcm", "token": "fcm-bruno"}]},
        ],
        "teams": [{"id": "approvers", "name": "Approvers", "members": ["bruno", "chen", "dana"]}],
        "routes": [
            {"id": "pages", "match": {"types": ["flow.*"]}, "recipients": [{"person": "chen"}, {"person": "dana"}]},
            {"id": "approvals", "match": {"types": ["approval.*"]}, "recipients": [{"team": "approvers"}]},
        ],
    }
    path = DATA_DIR / "actions-directory.yaml"
    path.write_text(yaml.safe_dump(spec))
    with db.session() as s:
        directory.apply(directory.load(path), s)
    return {"fcm-chen": "chen", CHEN_IPHONE: "chen", "fcm-dana": "dana", "fcm-bruno": "bruno",
            subscription["endpoint"].rsplit("/", 1)[-1]: "chen"}


def delivered(fake: FakeProviders, event_id: Any, workers: Workers) -> dict[str, int]:
    """Wait until every target of the event is terminal, all of them sent; returns person -> notification id."""
    wait_until(lambda: all_done([event_id]), message="all targets terminal")
    assert {r.status for r in rows(select(Delivery.status).where(Delivery.event_id == event_id))} == {"sent"}
    return {r.person_id: r.id for r in rows(select(Notification.person_id, Notification.id)
                                            .where(Notification.event_id == event_id))}


def pushes(fake: FakeProviders, owners: dict[str, str]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """(channel, person, action -> token, the whole payload) of every accepted push, from what the fakes saw."""
    found = []
    for seen in fake.providers["fcm"].seen:
        if seen["status"] == 200:
            data = seen["data"]
            actions = [a for a in data.get("actions", "").split(",") if a]
            found.append(("fcm", owners[seen["token"]], {a: data[f"action_{a}"] for a in actions},
                          {"notification": seen["notification"], "data": data}))
            assert not [k for k in data if k.startswith("action_") and k[7:] not in actions]
    for seen in fake.providers["apns"].seen:
        if seen["status"] == 200:
            found.append(("apns", owners[seen["token"]], seen["payload"].get("tokens", {}), seen["payload"]))
    for seen in fake.providers["webpush"].seen:
        if seen["status"] == 201:
            body = json.loads(seen["text"])
            found.append(("webpush", owners[seen["token"]], body.get("tokens", {}), body))
    return found


def assert_tokens_for(tokens: dict[str, str], person: str, notification_id: int, actions: list[str]) -> list[Any]:
    assert list(tokens) == actions
    claims = [verify(token) for token in tokens.values()]
    assert [(c.person_id, c.notification_id, c.action) for c in claims] == [
        (person, notification_id, action) for action in actions]
    return claims


def test_an_incident_page_carries_acknowledge_resolve_and_follow_up_on_every_platform(
        fake: FakeProviders, workers: Workers) -> None:
    # given chen with a phone on each channel and dana with one, both paged for flow failures
    owners = load_directory(fake.webpush.subscribe())
    workers.start("all", env={**fake.env(), "HERALD_PUBLIC_URL": PUBLIC_URL}, concurrency=4, kind="threads")
    # when a flow fails with a long error text
    event_id = publish(flow_failed("orders-to-erp", environment="prod", error=LONG))
    notified = delivered(fake, event_id, workers)
    # then each push carries the three tokens of its recipient's own notification
    found = pushes(fake, owners)
    assert sorted((channel, person) for channel, person, _, _ in found) == [
        ("apns", "chen"), ("fcm", "chen"), ("fcm", "dana"), ("webpush", "chen")]
    for _, person, tokens, _ in found:
        claims = assert_tokens_for(tokens, person, notified[person], INCIDENT)
        assert {c.token_id for c in claims} == {f"{notified[person]}:{a}" for a in INCIDENT}
    by_channel = {channel: payload for channel, person, _, payload in found if person == "chen"}
    # APNs: the category the app registered its buttons under
    assert by_channel["apns"]["aps"]["category"] == "HERALD_INCIDENT"
    # FCM: strings only, the action list and the category
    assert by_channel["fcm"]["data"]["actions"] == "acknowledge,resolve,follow_up"
    assert by_channel["fcm"]["data"]["category"] == "HERALD_INCIDENT"
    # Web Push: the buttons for showNotification(), and the responder page at herald's public address
    web = by_channel["webpush"]
    assert web["actions"] == [{"action": "acknowledge", "title": "Acknowledge"},
                              {"action": "resolve", "title": "Resolve"}, {"action": "follow_up", "title": "Follow up"}]
    assert web["url"] == f"{PUBLIC_URL}/app/#n={notified['chen']}"
    assert web["link"].startswith("herald://events/")  # the app's link stays
    # and the long text was cut to make room, within APNs' 4 KB (FCM's and Web Push's fakes refuse larger)
    assert by_channel["fcm"]["notification"]["body"].endswith(ELLIPSIS) and web["body"].endswith(ELLIPSIS)
    assert all(seen["size"] <= 4096 for seen in fake.providers["apns"].seen)


def test_an_approval_request_carries_votes_for_the_approvers_and_none_for_the_requester(
        fake: FakeProviders, workers: Workers) -> None:
    # given approvers chen, dana and bruno; bruno asks, under his e-mail address in capitals
    owners = load_directory(fake.webpush.subscribe())
    workers.start("all", env={**fake.env(), "HERALD_PUBLIC_URL": PUBLIC_URL}, concurrency=4, kind="threads")
    expires_at = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    # when the request is published, with a long summary
    event_id = publish(approval_requested(request_kind="credential_set", target="orders-api",
                                          requester="BRUNO@example.com", expires_at=expires_at, environment="prod",
                                          quorum=2, summary=LONG[:2000]))
    notified = delivered(fake, event_id, workers)
    found = pushes(fake, owners)
    # then chen's and dana's pushes carry approve, reject and request_info, until the approval expires
    voters = [(channel, person, tokens, payload) for channel, person, tokens, payload in found if person != "bruno"]
    assert sorted((channel, person) for channel, person, _, _ in voters) == [
        ("apns", "chen"), ("fcm", "chen"), ("fcm", "dana"), ("webpush", "chen")]
    for _, person, tokens, _ in voters:
        claims = assert_tokens_for(tokens, person, notified[person], APPROVAL)
        assert {c.expires_at for c in claims} == {expires_at}
    assert {payload["aps"]["category"] for channel, _, _, payload in voters if channel == "apns"} == {"HERALD_APPROVAL"}
    assert all(seen["size"] <= 4096 for seen in fake.providers["apns"].seen)
    # and the requester, were a copy to reach him (routing keeps it from him), has nothing to vote with
    for _, person, tokens, payload in found:
        assert person != "bruno" or (tokens == {} and "actions" not in payload["data"])
    messages = claim(notify(event_id, "bruno", "fcm-bruno"), None)[0]
    assert [(m.payload.actions, m.payload.category) for m in messages] == [({}, None)]
    assert (messages[0].payload.url or "").endswith(f"/app/#n={notified_id(event_id, 'bruno')}")


def notify(event_id: Any, person: str, token: str) -> uuid.UUID:
    """A notification of the event for ``person`` with one target on the device ``token``, in a batch of its own."""
    batch = uuid.uuid4()
    with db.session() as s:
        device_id = s.scalar(select(Device.id).where(Device.token == token))
        note = Notification(event_id=event_id, person_id=person, route="test", reason="test", status="queued")
        s.add(note)
        s.flush()
        s.add(Delivery(notification_id=note.id, event_id=event_id, device_id=device_id, channel="fcm", batch_id=batch))
    return batch


def notified_id(event_id: Any, person: str) -> int:
    [(found,)] = rows(select(Notification.id).where(Notification.event_id == event_id,
                                                    Notification.person_id == person))
    return int(found)
