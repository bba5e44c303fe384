"""/v1/devices: a signed-in person registers and removes their own devices, with herald's address checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from herald import db
from herald.models import AuditLog, Device
from tests.integration.apiclient import api_client, bearer, make_key, sign_in

P256DH = "BAgfuuPUDREJwno3CgKFXq8rKEb_u-M26AHGGnEXuHMVm8erk4eH1eLGRFiortdSy_RV04qdLUvhfhAYH8GX9qA"
AUTH = "oQmp5DXoTJR3vwejQT7C_Q"
APNS_TOKEN = "ab" * 32


@pytest.fixture
def client(sample_directory: None) -> Iterator[TestClient]:
    yield from api_client()


def subscription(endpoint: str, **keys: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "keys": {"p256dh": P256DH, "auth": AUTH, **keys}}


def devices_of(person: str) -> list[tuple[int, str]]:
    """The person's active devices: (id, token)."""
    with db.session() as s:
        return [(row.id, row.token) for row in s.execute(select(Device.id, Device.token).where(
            Device.person_id == person, Device.active.is_(True)).order_by(Device.id))]


@pytest.mark.parametrize("device", [
    {"channel": "fcm", "token": "fcm-token-of-a-new-phone"},
    {"channel": "apns", "token": APNS_TOKEN, "app": "com.example.admin", "environment": "sandbox"},
    {"channel": "webpush", "token": subscription("https://push.example.com/sub/new")},
    {"channel": "webpush", "token": json.dumps(subscription("https://push.example.com/sub/as-text"))},
])
def test_a_signed_in_person_registers_a_device(client: TestClient, device: dict[str, Any]) -> None:
    before = {d for d, _ in devices_of("alice")}
    answer = client.post("/v1/devices", json=device, headers=bearer(sign_in("alice")))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["channel"] == device["channel"] and body["active"] is True
    assert "token" not in body and AUTH not in answer.text  # a subscription's secret is never echoed
    assert [d for d, _ in devices_of("alice") if d not in before] == [body["id"]]
    with db.session() as s:
        assert s.scalar(select(AuditLog.actor).where(AuditLog.action == "device.registered",
                                                     AuditLog.subject_id == str(body["id"]))) == "alice"


@pytest.mark.parametrize("device, reason", [
    ({"channel": "webpush", "token": subscription("https://169.254.169.254/latest/meta-data")}, "not public"),
    ({"channel": "webpush", "token": subscription("http://localhost:6379/")}, "loopback"),
    ({"channel": "webpush", "token": subscription("https://10.0.0.8/push")}, "not public"),
    ({"channel": "webpush", "token": subscription("https://0x7f.0.0.1/push")}, "not a domain name"),
    ({"channel": "webpush", "token": subscription("https://user:pw@push.example.com/x")}, "user name"),
    ({"channel": "webpush", "token": subscription("https://push.example.com/x", p256dh="BNcR-forged")}, "P-256"),
    ({"channel": "webpush", "token": "not json"}, "JSON"),
    ({"channel": "apns", "token": APNS_TOKEN, "app": "../../etc"}, "app"),
    ({"channel": "apns", "token": "zz" * 32, "app": "com.example.admin"}, "hexadecimal"),
    ({"channel": "fcm", "token": {"endpoint": "x"}}, "string"),
    ({"channel": "sms", "token": "+15550100"}, "unknown channel"),
])
def test_a_forged_or_hostile_device_is_refused_and_nothing_stored(
        client: TestClient, device: dict[str, Any], reason: str) -> None:
    before = devices_of("alice")
    answer = client.post("/v1/devices", json=device, headers=bearer(sign_in("alice")))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid device" and reason in answer.json()["reason"]
    assert devices_of("alice") == before


def test_registering_needs_a_signed_in_person_or_a_devices_key_naming_one(client: TestClient) -> None:
    device = {"channel": "fcm", "token": "fcm-token-of-a-new-phone"}
    for headers, query, status in (({}, "", 401), (bearer("hs_not-a-session"), "", 401),
                                   (bearer(make_key("dev", "devices")), "", 400),  # whose devices?
                                   (bearer(make_key("prod", "publish")), "?person=alice", 403),
                                   (bearer(make_key("prod", "devices")), "?person=mallory", 404),
                                   (bearer(sign_in("bruno")), "?person=alice", 403)):
        answer = client.post(f"/v1/devices{query}", json=device, headers=headers)
        assert answer.status_code == status, (query, answer.text)
    assert "fcm-token-of-a-new-phone" not in [token for _, token in devices_of("alice")]


def test_an_app_backend_with_a_devices_key_manages_the_devices_of_the_person_it_names(client: TestClient) -> None:
    key = bearer(make_key("prod", "devices"))
    # when the backend registers a phone for alice, naming her by another spelling
    answer = client.post("/v1/devices?person=ALICE", json={"channel": "fcm", "token": "fcm-token-from-backend"},
                         headers=key)
    assert answer.status_code == 201, answer.text
    device = answer.json()["id"]
    # then it is alice's, and the audit names the key and the person
    assert (device, "fcm-token-from-backend") in devices_of("alice")
    with db.session() as s:
        row = s.scalars(select(AuditLog).where(AuditLog.action == "device.registered",
                                               AuditLog.subject_id == str(device))).one()
        assert row.actor.startswith("key:") and row.details["person"] == "alice"
    # and it lists and removes hers, never another person's
    assert device in [d["id"] for d in client.get("/v1/devices?person=alice", headers=key).json()]
    assert client.delete(f"/v1/devices/{device}?person=bruno", headers=key).status_code == 404
    assert client.delete(f"/v1/devices/{device}?person=alice", headers=key).status_code == 204
    assert device not in [d for d, _ in devices_of("alice")]


def test_a_person_removes_their_own_device_but_never_another_persons(client: TestClient) -> None:
    alices = devices_of("alice")[0][0]
    as_bruno, as_alice = bearer(sign_in("bruno")), bearer(sign_in("alice"))
    assert client.delete(f"/v1/devices/{alices}", headers=as_bruno).status_code == 404
    assert alices in [d for d, _ in devices_of("alice")]
    assert alices not in [d["id"] for d in client.get("/v1/devices", headers=as_bruno).json()]
    assert client.delete(f"/v1/devices/{alices}", headers=as_alice).status_code == 204
    assert alices not in [d for d, _ in devices_of("alice")]
    assert client.delete(f"/v1/devices/{alices}", headers=as_alice).status_code == 404
    assert client.delete(f"/v1/devices/{2**63}", headers=as_alice).status_code == 422


def test_a_body_over_the_limit_is_413_whether_its_length_is_announced_or_not(client: TestClient) -> None:
    before = devices_of("alice")
    huge = json.dumps({"channel": "fcm", "token": "x" * 100_000}).encode()
    headers = {**bearer(sign_in("alice")), "Content-Type": "application/json"}
    announced = client.post("/v1/devices", content=huge, headers=headers)
    assert announced.status_code == 413 and announced.json()["error"] == "request entity too large"
    chunked = client.post("/v1/devices", content=iter([huge[:50_000], huge[50_000:]]), headers=headers)
    assert chunked.status_code == 413
    assert devices_of("alice") == before
