"""Web Push through the local fake: VAPID verified, aes128gcm really decrypted, the status table."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from herald.fakes import FakeProviders
from herald.fakes.testing import herald_env, running_fakes
from workers.deliver import vapid
from workers.deliver.base import Message, Payload, Target
from workers.deliver.webpush import ERRORS, MAX_CLEARTEXT_BYTES, WebPushChannel


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    with running_fakes() as fakes:
        yield fakes


@pytest.fixture
def webpush(fakes: FakeProviders, clean: None) -> Iterator[WebPushChannel]:
    fakes.call(lambda: [p.reset() for p in fakes.providers.values()])
    with herald_env(fakes.env()):
        channel = WebPushChannel()
        channel.alert_auth = lambda reason, count: None  # type: ignore[method-assign]
        yield channel
        channel.close()


def message(subscription: dict[str, object] | str, *, delivery_id: int = 1, body: str = "Order PO-1 from ACME",
            severity: str = "info") -> Message:
    token = subscription if isinstance(subscription, str) else json.dumps(subscription)
    return Message(Target(delivery_id, delivery_id, token, "subscription", "portal", "production", 1),
                   Payload("[prod] order submitted: PO-1", body, "herald://events/3", {"event_id": "3"}),
                   severity, "orders.eu:PO-1", 7200)


def test_the_browser_decrypts_the_notification_and_headers_follow_the_rfcs(fakes: FakeProviders,
                                                                           webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe(application_server_key=webpush.vapid.public)
    [result] = webpush.send([message(sub, severity="critical")])
    assert result.outcome == "sent" and result.provider_status == "201"
    seen = list(fakes.providers["webpush"].seen)[-1]
    assert json.loads(seen["text"]) == {"title": "[prod] order submitted: PO-1", "body": "Order PO-1 from ACME",
                                        "link": "herald://events/3", "data": {"event_id": "3"}}
    assert seen["ttl"] == "7200"  # never 0: an offline device still gets it
    assert seen["urgency"] == "high"
    assert seen["topic"] and len(seen["topic"]) <= 32


# status forced by the push service -> herald's outcome
TABLE = [(404, "invalid_token"), (410, "invalid_token"), (413, "permanent"), (429, "transient"),
         (400, "permanent"), (401, "auth"), (403, "auth"), (500, "transient"), (503, "transient")]


@pytest.mark.parametrize(("status", "outcome"), TABLE)
def test_every_status_maps_to_its_table_row(fakes: FakeProviders, webpush: WebPushChannel, status: int,
                                            outcome: str) -> None:
    sub = fakes.webpush.subscribe()
    fakes.providers["webpush"].switches.errors[fakes.webpush.endpoint_token(sub)] = str(status)
    [result] = webpush.send([message(sub)])
    assert result.outcome == outcome, result
    assert result.provider_status == str(status)


def test_every_table_row_is_covered() -> None:
    assert {k for k in ERRORS if k.isdigit()} == {str(s) for s, _ in TABLE if s < 500}


def test_429_carries_the_retry_after_of_the_push_service(fakes: FakeProviders, webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe()
    fakes.providers["webpush"].switches.throttle = 1
    fakes.providers["webpush"].switches.retry_after_s = 7
    [result] = webpush.send([message(sub)])
    assert (result.outcome, result.retry_after_s) == ("transient", 7.0)


def test_an_unsubscribed_browser_is_pruned(fakes: FakeProviders, webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe()
    fakes.providers["webpush"].switches.dead_tokens.add(fakes.webpush.endpoint_token(sub))
    [result] = webpush.send([message(sub)])
    assert result.outcome == "invalid_token" and result.provider_status == "410"


def test_a_subscription_made_for_another_vapid_key_is_refused_and_kept(fakes: FakeProviders,
                                                                       webpush: WebPushChannel) -> None:
    other = vapid.b64url(b"\x04" + b"\x01" * 64)
    sub = fakes.webpush.subscribe(application_server_key=other)
    [result] = webpush.send([message(sub)])
    assert result.outcome == "auth"  # herald's key is wrong, not the browser's subscription


def test_a_malformed_subscription_is_deactivated_without_a_request(fakes: FakeProviders,
                                                                   webpush: WebPushChannel) -> None:
    [result] = webpush.send([message("not json")])
    assert result.outcome == "invalid_token"
    assert not list(fakes.providers["webpush"].seen)


def test_a_long_body_is_trimmed_to_fit_the_encrypted_record(fakes: FakeProviders, webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe()
    [result] = webpush.send([message(sub, body="\u00e9" * 5000)])  # two bytes per character
    assert result.outcome == "sent"
    text = list(fakes.providers["webpush"].seen)[-1]["text"]
    assert len(text.encode()) <= MAX_CLEARTEXT_BYTES and json.loads(text)["body"].endswith("\u2026")
