"""FCM HTTP v1 through the local fake: every error-table row, OAuth, the message schema, size limits."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald.channels.fcm.provider import ERRORS, FcmChannel, classify
from herald.channels.types import Message, Payload, Target
from tests.integration.conftest import fresh_fakes


@pytest.fixture
def fcm(fakes: FakeProviders, clean: None) -> Iterator[FcmChannel]:
    fresh_fakes(fakes)
    with herald_env(fakes.env()):
        channel = FcmChannel()
        yield channel
        channel.close()


def message(token: str, *, delivery_id: int = 1, kind: str = "token", severity: str = "error",
            title: str = "[prod] managed flow failed: orders", body: str = "HTTP 502",
            data: dict[str, str] | None = None) -> Message:
    return Message(Target(delivery_id, delivery_id, token, kind, "com.example.admin", "production", 1),
                   Payload(title, body, "herald://events/1", data or {"event_id": "e1"}), severity, "orders-to-erp",
                   3600)


# errorCode forced by the fake -> what herald must do
TABLE = [
    ("UNREGISTERED", "invalid_token"),
    ("SENDER_ID_MISMATCH", "invalid_token"),
    ("INVALID_TOKEN", "invalid_token"),  # INVALID_ARGUMENT with a message.token violation
    ("INVALID_ARGUMENT", "permanent"),  # any other invalid argument: the token stays
    ("QUOTA_EXCEEDED", "transient"),
    ("UNAVAILABLE", "transient"),
    ("INTERNAL", "transient"),
    ("UNSPECIFIED_ERROR", "transient"),
    ("THIRD_PARTY_AUTH_ERROR", "auth"),
]


@pytest.mark.parametrize(("code", "outcome"), TABLE)
def test_every_error_code_maps_to_its_table_row(fakes: FakeProviders, fcm: FcmChannel, code: str,
                                                outcome: str) -> None:
    # given a token the fake answers with this error code
    fakes.providers["fcm"].switches.errors["tok-1"] = code
    fcm.alert_auth = lambda reason, count: None  # type: ignore[method-assign]  # tested in the pipeline
    # when herald sends to it
    [result] = fcm.send([message("tok-1")])
    # then the outcome is the table's
    assert result.outcome == outcome, result
    seen = list(fakes.providers["fcm"].seen)[-1]
    assert seen["reason"] == code
    if code == "QUOTA_EXCEEDED":
        assert result.retry_after_s is not None and result.retry_after_s >= 60  # at least a minute
    if code == "UNAVAILABLE":
        assert result.retry_after_s == fakes.providers["fcm"].switches.retry_after_s


def test_every_table_row_is_reachable_from_a_real_error_body() -> None:
    # the classifier reads FCM's body shape: the FcmError detail first, the HTTP status as a fallback
    body = {"error": {"code": 404, "status": "NOT_FOUND", "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}
    assert classify(404, body)[0] == "UNREGISTERED"
    assert classify(401, {"error": {"status": "UNAUTHENTICATED"}})[1].outcome == "auth"
    assert classify(502, {})[0] == "5xx" and classify(418, {})[0] == "4xx"
    plain_invalid = {"error": {"status": "INVALID_ARGUMENT", "details": [
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "message.android.ttl"}]}]}}
    assert classify(400, plain_invalid)[1].outcome == "permanent"
    assert {rule.outcome for rule in ERRORS.values()} == {"invalid_token", "permanent", "transient", "auth"}


def test_a_dead_token_is_pruned_and_a_bad_payload_keeps_the_token(fakes: FakeProviders, fcm: FcmChannel) -> None:
    fakes.providers["fcm"].switches.dead_tokens.add("gone")
    fakes.providers["fcm"].switches.errors["alive"] = "INVALID_ARGUMENT"
    results = {r.delivery_id: r for r in fcm.send([message("gone", delivery_id=1), message("alive", delivery_id=2),
                                                   message("fine", delivery_id=3)])}
    assert results[1].outcome == "invalid_token"
    assert results[2].outcome == "permanent"  # the payload is wrong, never the token
    assert results[3].outcome == "sent"


def test_the_request_is_the_v1_schema_with_priority_ttl_collapse_key_and_fid(fakes: FakeProviders,
                                                                             fcm: FcmChannel) -> None:
    results = fcm.send([message("reg-token", delivery_id=1, severity="critical"),
                        message("fid-123", delivery_id=2, kind="fid", severity="info")])
    assert {r.outcome for r in results} == {"sent"}
    seen = {s["token"]: s for s in fakes.providers["fcm"].seen}
    assert seen["reg-token"]["validate_only"] is False  # dry_run explicitly false
    assert seen["reg-token"]["android"] == {"priority": "HIGH", "ttl": "3600s", "collapse_key": "orders-to-erp"}
    assert seen["fid-123"]["kind"] == "fid" and seen["fid-123"]["android"]["priority"] == "NORMAL"
    assert seen["reg-token"]["notification"] == {"title": "[prod] managed flow failed: orders", "body": "HTTP 502"}
    assert seen["reg-token"]["data"]["link"] == "herald://events/1"


def test_an_access_token_is_fetched_once_and_refreshed_when_refused(fakes: FakeProviders, fcm: FcmChannel) -> None:
    before = fakes.fcm.tokens_issued
    fcm.send([message(f"t{i}", delivery_id=i) for i in range(20)])
    assert fakes.fcm.tokens_issued == before + 1  # one OAuth exchange for twenty sends
    # when the provider forgets the access token (revoked before its expiry)
    fakes.call(fakes.fcm.access_tokens.clear)
    [result] = fcm.send([message("after-revoke")])
    # then herald fetches a new one and the send succeeds
    assert result.outcome == "sent"
    assert fakes.fcm.tokens_issued == before + 2


def test_an_oversized_body_is_trimmed_predictably_and_still_accepted(fakes: FakeProviders, fcm: FcmChannel) -> None:
    [result] = fcm.send([message("long", body="x" * 10_000, title="t" * 300)])
    assert result.outcome == "sent"
    seen = list(fakes.providers["fcm"].seen)[-1]
    body = seen["notification"]["body"]
    assert body.endswith("\u2026") and body.startswith("xxx")
    assert len(json.dumps({"notification": seen["notification"], "data": seen["data"]}).encode()) <= 4096


def test_data_too_large_to_trim_fails_with_a_clear_reason_before_sending(fakes: FakeProviders,
                                                                         fcm: FcmChannel) -> None:
    [result] = fcm.send([message("big-data", data={"blob": "y" * 5000})])
    assert result.outcome == "permanent"
    assert "limit 4096" in (result.reason or "")
    assert not list(fakes.providers["fcm"].seen)  # nothing was sent
