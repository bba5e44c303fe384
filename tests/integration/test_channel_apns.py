"""APNs over HTTP/2 and TLS through the local fake: the reason table, token hygiene, JWT reuse, GOAWAY."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.fakes import FakeProviders
from devtools.fakes.apns import REASONS
from devtools.fakes.testing import herald_env
from herald.channels.apns.provider import ERRORS, ApnsChannel
from herald.channels.types import Message, Payload, Target
from tests.integration.conftest import fresh_fakes


@pytest.fixture
def apns(fakes: FakeProviders, clean: None) -> Iterator[ApnsChannel]:
    fresh_fakes(fakes)
    with herald_env(fakes.env()):
        channel = ApnsChannel()
        channel.alert_auth = lambda reason, count: None  # type: ignore[method-assign]  # pipeline tests it
        yield channel
        channel.close()


def message(token: str, *, delivery_id: int = 1, environment: str = "production",
            registered_at: datetime | None = None, severity: str = "critical", app: str = "com.example.admin"
            ) -> Message:
    return Message(Target(delivery_id, delivery_id, token, "token", app, environment, 1, registered_at),
                   Payload("[prod] SLA breached: edi-inbound", "lag 40 (threshold 15)", "herald://events/2",
                           {"id": "2"}),
                   severity, "sla-edi", 600)


# Every reason Apple documents, forced for one token, except the ones herald handles before the table.
SPECIAL = {"ExpiredProviderToken", "BadDeviceToken", "Unregistered", "ExpiredToken"}


@pytest.mark.parametrize("reason", sorted(set(REASONS) - SPECIAL))
def test_every_reason_maps_to_its_table_row(fakes: FakeProviders, apns: ApnsChannel, reason: str) -> None:
    fakes.providers["apns"].switches.errors["device-1"] = reason
    [result] = apns.send([message("device-1")])
    assert result.outcome == ERRORS[reason].outcome, result
    assert result.provider_status == f"{REASONS[reason]} {reason}"


def test_a_success_is_headers_only_with_the_documented_headers(fakes: FakeProviders, apns: ApnsChannel) -> None:
    [result] = apns.send([message("device-ok")])
    assert result.outcome == "sent" and result.provider_status == "200"
    seen = list(fakes.providers["apns"].seen)[-1]
    assert seen["topic"] == "com.example.admin" and seen["push_type"] == "alert" and seen["priority"] == "10"
    assert seen["collapse_id"] == "sla-edi" and int(seen["expiration"]) > time.time()
    assert seen["alert"] == {"title": "[prod] SLA breached: edi-inbound", "body": "lag 40 (threshold 15)"}


def test_a_flow_failed_page_sounds_and_a_business_event_does_not(fakes: FakeProviders, apns: ApnsChannel) -> None:
    # given a flow.failed page (severity error) and a business event (info) with no dedup key
    business = Message(Target(2, 2, "b" * 64, "token", "com.example.admin", "production", 1),
                       Payload("[prod] order submitted: PO-1", "ACME", "herald://events/3", {"id": "3"}),
                       "info", "herald-n3", 600)
    # when herald sends both
    assert {r.outcome for r in apns.send([message("a" * 64, severity="error"), business])} == {"sent"}
    seen = {s["token"]: s for s in fakes.providers["apns"].seen}
    page, quiet = seen["a" * 64], seen["b" * 64]
    # then the page sounds, is time-sensitive and goes at priority 10
    assert page["payload"]["aps"]["sound"] == "default"
    assert page["payload"]["aps"]["interruption-level"] == "time-sensitive" and page["priority"] == "10"
    # and the business event is silent, at the default level and priority 5, yet still collapses
    assert "sound" not in quiet["payload"]["aps"] and "interruption-level" not in quiet["payload"]["aps"]
    assert quiet["priority"] == "5" and quiet["collapse_id"] == "herald-n3"


def test_a_critical_page_is_a_critical_alert_only_with_the_entitlement(fakes: FakeProviders, apns: ApnsChannel,
                                                                       clean: None) -> None:
    # without HERALD_APNS_CRITICAL_ALERTS a critical page is time-sensitive (iOS would refuse to play it as critical)
    assert apns.send([message("c" * 64, severity="critical")])[0].outcome == "sent"
    [plain] = fakes.providers["apns"].seen
    assert plain["payload"]["aps"]["interruption-level"] == "time-sensitive"
    # with it, the critical level and the critical sound dictionary
    with herald_env({**fakes.env(), "HERALD_APNS_CRITICAL_ALERTS": "true"}):
        entitled = ApnsChannel()
        try:
            assert entitled.send([message("d" * 64, severity="critical"),
                                  message("e" * 64, delivery_id=2, severity="error")])[0].outcome == "sent"
        finally:
            entitled.close()
    seen = {s["token"]: s["payload"]["aps"] for s in fakes.providers["apns"].seen}
    assert seen["d" * 64]["interruption-level"] == "critical"
    assert seen["d" * 64]["sound"] == {"critical": 1, "name": "default", "volume": 1.0}
    assert seen["e" * 64]["interruption-level"] == "time-sensitive" and seen["e" * 64]["sound"] == "default"


def test_unregistered_prunes_unless_the_token_was_registered_after_the_timestamp(fakes: FakeProviders,
                                                                                 apns: ApnsChannel) -> None:
    fakes.providers["apns"].switches.dead_tokens.update({"old", "renewed"})
    fakes.apns.unregistered_at_ms = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    results = {r.delivery_id: r for r in apns.send([
        message("old", delivery_id=1, registered_at=datetime.now(UTC) - timedelta(days=3)),
        message("renewed", delivery_id=2, registered_at=datetime.now(UTC) - timedelta(minutes=5))])}
    assert results[1].outcome == "invalid_token"
    assert results[2].outcome == "permanent"  # registered again after APNs invalidated it: kept


def test_bad_device_token_checks_the_other_environment_before_deactivating(fakes: FakeProviders,
                                                                           apns: ApnsChannel) -> None:
    # given a production token registered as sandbox, and a token bad everywhere
    fakes.apns.environments["prod-only"] = "production"
    fakes.providers["apns"].switches.errors["garbage"] = "BadDeviceToken*2"
    results = {r.delivery_id: r for r in apns.send([message("prod-only", delivery_id=1, environment="sandbox"),
                                                    message("garbage", delivery_id=2, environment="sandbox")])}
    # then the first is delivered and its device corrected, the second deactivated
    assert results[1].outcome == "sent" and results[1].environment == "production"
    assert results[2].outcome == "invalid_token"
    hosts = [(s["token"], s["environment"]) for s in fakes.providers["apns"].seen]
    assert ("prod-only", "sandbox") in hosts and ("prod-only", "production") in hosts


def test_one_provider_token_is_reused_across_requests(fakes: FakeProviders, apns: ApnsChannel) -> None:
    results = apns.send([message(f"d{i}", delivery_id=i) for i in range(60)])
    results += apns.send([message(f"e{i}", delivery_id=100 + i) for i in range(20)])
    assert {r.outcome for r in results} == {"sent"}
    assert len({s["provider_token"] for s in fakes.providers["apns"].seen}) == 1
    assert apns.token.generated == 1


def test_an_expired_provider_token_is_regenerated_once_and_the_send_retried(fakes: FakeProviders,
                                                                            apns: ApnsChannel) -> None:
    assert apns.send([message("before")])[0].outcome == "sent"
    # when APNs considers the token too old
    fakes.apns.token_max_age_s = 1
    time.sleep(1.3)
    results = apns.send([message(f"after{i}", delivery_id=i) for i in range(10)])
    # then one new token serves every request of the batch
    assert {r.outcome for r in results} == {"sent"}
    assert apns.token.generated == 2
    reasons = [s["reason"] for s in fakes.providers["apns"].seen]
    assert "ExpiredProviderToken" in reasons


def test_too_many_provider_token_updates_stops_regeneration(fakes: FakeProviders, apns: ApnsChannel) -> None:
    fakes.providers["apns"].switches.errors["x"] = "TooManyProviderTokenUpdates"
    [result] = apns.send([message("x")])
    assert result.outcome == "transient"
    assert apns.token.frozen_until > time.time() + 600
    fakes.apns.token_max_age_s = 0  # every token now "expired": herald must not regenerate
    apns.send([message("y")])
    assert apns.token.generated == 1


def test_streams_a_goaway_left_unprocessed_are_resent_on_a_new_connection(fakes: FakeProviders,
                                                                          apns: ApnsChannel) -> None:
    fakes.apns.goaway_after = 15
    connections = fakes.apns.connections
    results = apns.send([message(f"g{i}", delivery_id=i) for i in range(120)])
    assert [r.outcome for r in results].count("sent") == 120, [(r.delivery_id, r.outcome, r.reason)
                                                               for r in results if r.outcome != "sent"]
    assert fakes.apns.connections - connections >= 8  # 120 requests, 15 per connection
    # and each was processed once: the answers to the streams below a GOAWAY still arrive (RFC 9113
    # section 6.8), so no answered request is mistaken for an unanswered one and sent twice
    answered = [s["token"] for s in fakes.providers["apns"].seen if s["status"] == 200]
    assert len(answered) == len(set(answered)) == 120


def test_a_device_without_a_known_topic_fails_without_a_request(fakes: FakeProviders, apns: ApnsChannel) -> None:
    # given a device stored before herald required a topic (app "default", not mapped)
    [result] = apns.send([message("a1" * 32, app="default")])
    # then it is not sent as apns-topic "default" (DeviceTokenNotForTopic on every event)
    assert result.outcome == "permanent" and "HERALD_APNS_TOPICS" in (result.reason or "")
    assert fakes.providers["apns"].requests == 0


def test_an_unknown_long_reason_is_stored_short(fakes: FakeProviders, apns: ApnsChannel) -> None:
    # given APNs (or whatever answers in its place) returns a reason of 5,000 characters with a newline
    fakes.providers["apns"].switches.errors["long"] = "Weird\n" + "R" * 5000
    [result] = apns.send([message("long")])
    # then what herald keeps fits its columns (provider_status is 64 characters) on one line
    assert result.outcome == "permanent"
    assert len(result.provider_status or "") <= 64 and len(result.reason or "") <= 500
    assert "\n" not in (result.provider_status or "") + (result.reason or "")
