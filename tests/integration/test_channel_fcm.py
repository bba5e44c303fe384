"""FCM HTTP v1 through the local fake: every error-table row, OAuth, the message schema, size limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fakes import FakeProviders
from devtools.fakes.fcm import SUBJECT_TOKEN
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
    assert seen["reg-token"]["android"] == {
        "priority": "HIGH", "ttl": "3600s", "collapse_key": "orders-to-erp",
        "notification": {"tag": "orders-to-erp", "channel_id": "herald_pages", "sound": "default",
                         "notification_priority": "PRIORITY_MAX"}}
    assert seen["fid-123"]["kind"] == "fid" and seen["fid-123"]["android"]["priority"] == "NORMAL"
    assert seen["reg-token"]["notification"] == {"title": "[prod] managed flow failed: orders", "body": "HTTP 502"}
    assert seen["reg-token"]["data"]["link"] == "herald://events/1"


def test_a_flow_failed_page_is_heard_and_a_business_event_is_not(fakes: FakeProviders, fcm: FcmChannel) -> None:
    # given a flow.failed page (severity error) and a business event (info) without a dedup key
    page = message("pager", delivery_id=1, severity="error")
    business = Message(Target(2, 2, "quiet", "token", "com.example.admin", "production", 1),
                       Payload("[prod] order submitted", "PO-1", "herald://events/2", {"event_id": "e2"}), "info",
                       "herald-n2", 3600)
    # when herald sends both
    assert {r.outcome for r in fcm.send([page, business])} == {"sent"}
    seen = {s["token"]: s["android"] for s in fakes.providers["fcm"].seen}
    # then the page wakes the device, in the app's high-importance channel, with a sound
    assert seen["pager"]["priority"] == "HIGH"
    assert seen["pager"]["notification"] == {"tag": "orders-to-erp", "channel_id": "herald_pages",
                                             "sound": "default", "notification_priority": "PRIORITY_HIGH"}
    # and the business event is normal priority in the app's default channel, silent, but still collapses
    assert seen["quiet"]["priority"] == "NORMAL"
    assert seen["quiet"]["collapse_key"] == "herald-n2" and seen["quiet"]["notification"] == {"tag": "herald-n2"}


def test_the_page_channel_is_a_setting(fakes: FakeProviders, clean: None) -> None:
    fresh_fakes(fakes)
    with herald_env({**fakes.env(), "HERALD_FCM_PAGE_CHANNEL": "oncall"}):
        channel = FcmChannel()
        try:
            assert [r.outcome for r in channel.send([message("pager-2", severity="critical")])] == ["sent"]
        finally:
            channel.close()
    [seen] = fakes.providers["fcm"].seen
    assert seen["android"]["notification"]["channel_id"] == "oncall"


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


def test_a_service_account_file_goes_through_firebase_admin(fakes: FakeProviders, fcm: FcmChannel) -> None:
    # the fakes' service-account file has its token_uri at the fake: firebase-admin's Certificate signs the
    # assertion (google-auth: audience Google's token endpoint) and posts it there
    before = len(fakes.fcm.grants)
    [result] = fcm.send([message("sa-1")])
    assert result.outcome == "sent"
    assert fakes.fcm.grants[before:] == ["jwt-bearer"]
    [creds] = fcm.credentials.values()
    assert creds.project_id == "herald-fake" and creds.expires_at > time.time() + 3000


def test_a_token_near_its_expiry_is_refreshed_in_the_background(fakes: FakeProviders, fcm: FcmChannel) -> None:
    assert fcm.send([message("warm")])[0].outcome == "sent"
    [creds] = fcm.credentials.values()
    issued, old = fakes.fcm.tokens_issued, creds.access_token
    # when the token is within the refresh margin (still valid)
    creds.expires_at = time.time() + 60
    # then the send goes out with the token in hand, and a new one is fetched beside it
    assert fcm.send([message("still-valid")])[0].outcome == "sent"
    deadline = time.monotonic() + 10
    # (until the channel holds the new token: the fake counts it issued before its answer reaches the channel)
    while creds.access_token == old and time.monotonic() < deadline:
        fcm.send([message("nudge")])  # the background task runs on the channel's loop, between sends
    assert fakes.fcm.tokens_issued == issued + 1
    assert creds.access_token != old and creds.expires_at > time.time() + 3000


def test_missing_credentials_are_auth_failures_and_nothing_is_sent(fakes: FakeProviders, clean: None,
                                                                    tmp_path: Path) -> None:
    fresh_fakes(fakes)
    with herald_env({**fakes.env(), "HERALD_FCM_CREDENTIALS_FILE": str(tmp_path / "missing.json")}):
        channel = FcmChannel()
        channel.alert_auth = lambda reason, count: None  # type: ignore[method-assign]
        try:
            [result] = channel.send([message("no-creds")])
        finally:
            channel.close()
    assert result.outcome == "auth" and "missing.json" in (result.reason or "")
    assert not list(fakes.providers["fcm"].seen)


def test_application_default_credentials_from_workload_identity_federation(
        fakes: FakeProviders, clean: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given no service-account file, and ADC (GOOGLE_APPLICATION_CREDENTIALS) an external_account file whose
    # STS token_url is the local fake. (An authorized_user file cannot be pointed at a local endpoint:
    # google-auth's ADC loader always replaces its token_uri with Google's.)
    fresh_fakes(fakes)
    subject = tmp_path / "subject-token"
    subject.write_text(SUBJECT_TOKEN)
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps(fakes.fcm.external_account(str(subject))))
    env = {k: v for k, v in fakes.env().items() if k != "HERALD_FCM_CREDENTIALS_FILE"}
    monkeypatch.delenv("HERALD_FCM_CREDENTIALS_FILE", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("HERALD_FCM_PROJECT_ID", "herald-fake")  # a federated identity names no project
    before = len(fakes.fcm.grants)
    with herald_env(env):
        channel = FcmChannel()
        try:
            [result] = channel.send([message("adc-1")])
            [creds] = channel.credentials.values()
        finally:
            channel.close()
    # then firebase-admin's ApplicationDefault exchanged the subject token at the fake and the message went out
    assert result.outcome == "sent", result
    assert creds.source == "Application Default Credentials" and creds.project_id == "herald-fake"
    assert fakes.fcm.grants[before:] == ["token-exchange"]


SEND_ONE = """
import json, sys
from herald.channels.fcm.provider import FcmChannel
from herald.channels.types import Message, Payload, Target
channel = FcmChannel()
[result] = channel.send([Message(Target(1, 1, "gce-1", "token", "com.example.admin", "production", 1),
                                 Payload("t", "b", "herald://events/1", {}), "error", "k", 60)])
print(json.dumps({"outcome": result.outcome, "reason": result.reason,
                  "project": [c.project_id for c in channel.credentials.values()]}))
channel.close()
"""


def test_application_default_credentials_from_the_metadata_server(fakes: FakeProviders, clean: None,
                                                                  tmp_path: Path) -> None:
    # given no key file at all, on a "VM" whose metadata server (google-auth reads GCE_METADATA_HOST and
    # GCE_METADATA_IP when it is imported: a process of its own) is the local fake
    fresh_fakes(fakes)
    host = fakes.urls["fcm"].removeprefix("http://")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HERALD_FCM_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS", "HERALD_FCM_PROJECT_ID")}
    env.update({k: v for k, v in fakes.env().items() if k != "HERALD_FCM_CREDENTIALS_FILE"})
    env.update({"GCE_METADATA_HOST": host, "GCE_METADATA_IP": host, "HOME": str(tmp_path),
                "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")})  # no gcloud ADC file found first
    before = len(fakes.fcm.grants)
    # when a fresh process sends one page
    done = subprocess.run([sys.executable, "-c", SEND_ONE], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    # then the project and the access token came from the metadata server, and FCM accepted the message
    assert answer["outcome"] == "sent", answer
    assert answer["project"] == ["herald-fake"]
    assert fakes.fcm.grants[before:] == ["metadata"]
