"""The provider channels inside the real pipeline: worker processes, Postgres, Redis and the fakes.

Each test publishes a business event to subscribers whose devices point at the fakes, then checks
what the fakes saw and what herald recorded.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import db, directory
from herald.models import DeadLetter, Delivery, DeliveryAttempt, Device, EventRow
from producers import business_event, publish
from tests.integration.conftest import DATA_DIR, Workers, fresh_fakes, wait_until
from tests.integration.helpers import all_done, rows


@pytest.fixture
def fake(fakes: FakeProviders, clean: None) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    # The fake's subscriptions point at this machine: herald registers them only with this setting.
    with herald_env({"HERALD_WEBPUSH_ALLOW_LOOPBACK": "true"}):
        yield fakes


def load_directory(devices: dict[str, list[dict[str, Any]]]) -> None:
    """People subscribed to orders.eu, with the given devices, and a route to topic subscribers."""
    spec = {
        "people": [{"id": pid, "name": pid, "devices": devs, "subscriptions": ["orders.eu"]}
                   for pid, devs in devices.items()],
        "routes": [{"id": "orders", "match": {"types": ["business.*"]}, "recipients": [{"subscribers": True}]}],
    }
    path = DATA_DIR / "channels-directory.yaml"
    path.write_text(yaml.safe_dump(spec))
    with db.session() as s:
        directory.apply(directory.load(path), s)


def order(reference: str = "PO-1") -> Any:
    return business_event("order_submitted", topic="orders.eu", reference=reference, environment="prod",
                          summary=f"Order {reference} from ACME")


# APNs device tokens are hex (herald/devices.py)
BEN_IPHONE = "be" * 32
DEAD_IPHONE = "de" * 32


def statuses() -> dict[str, int]:
    return dict(rows(select(Delivery.status, func.count()).group_by(Delivery.status)))  # type: ignore[arg-type]


def test_one_event_reaches_fcm_apns_and_webpush_and_dead_tokens_are_pruned(fake: FakeProviders,
                                                                           workers: Workers) -> None:
    # given devices on the three channels, one of them dead at FCM and one at APNs
    sub = fake.webpush.subscribe()
    fake.providers["fcm"].switches.dead_tokens.add("fcm-dead")
    fake.providers["apns"].switches.dead_tokens.add(DEAD_IPHONE)
    load_directory({
        "ana": [{"channel": "fcm", "token": "fcm-ana"}, {"channel": "fcm", "token": "fcm-dead"}],
        "ben": [{"channel": "apns", "token": BEN_IPHONE, "environment": "sandbox", "app": "com.example.portal"},
                {"channel": "apns", "token": DEAD_IPHONE, "app": "com.example.portal"}],
        "cy": [{"channel": "webpush", "subscription": sub}],
    })
    workers.start("all", env=fake.env(), concurrency=4, kind="threads")
    # when one business event is published
    event_id = publish(order())
    wait_until(lambda: all_done([event_id]), message="all targets terminal")
    # then every live device got it, through its provider, and the dead ones are deactivated
    by_token = {r.token: (r.status, r.active) for r in rows(
        select(Device.token, Delivery.status, Device.active).join(Delivery, Delivery.device_id == Device.id))}
    assert by_token["fcm-ana"] == ("sent", True) and by_token[BEN_IPHONE] == ("sent", True)
    assert by_token["fcm-dead"] == ("failed", False) and by_token[DEAD_IPHONE] == ("failed", False)
    assert [s for s, _ in by_token.values()].count("sent") == 3
    # the browser decrypted the clear text, the APNs sandbox host was used for ben
    [web] = [s for s in fake.providers["webpush"].seen if s["status"] == 201]
    assert "Order PO-1 from ACME" in web["text"]
    assert {(s["token"], s["environment"]) for s in fake.providers["apns"].seen} >= {(BEN_IPHONE, "sandbox")}
    # and each attempt is a row with the provider's status and latency
    attempts = rows(select(DeliveryAttempt.outcome, DeliveryAttempt.provider_status, DeliveryAttempt.latency_ms))
    assert {(a.outcome, a.provider_status) for a in attempts} >= {
        ("sent", "200"), ("sent", "201"), ("invalid_token", "404 UNREGISTERED"),
        ("invalid_token", "410 Unregistered")}
    assert all(a.latency_ms is not None for a in attempts)
    deactivated = rows(select(Device.deactivated_reason).where(Device.active.is_(False)))
    assert deactivated == [("provider: invalid token",)] * 2


def test_retry_after_is_honoured_and_only_the_failed_target_is_retried(fake: FakeProviders,
                                                                       workers: Workers) -> None:
    # given FCM answers UNAVAILABLE with Retry-After: 2 once, for one of three tokens
    fake.providers["fcm"].switches.retry_after_s = 2
    fake.providers["fcm"].switches.errors["fcm-busy"] = "UNAVAILABLE*1"
    load_directory({"ana": [{"channel": "fcm", "token": "fcm-busy"}],
                    "ben": [{"channel": "fcm", "token": "fcm-ok-1"}], "cy": [{"channel": "fcm", "token": "fcm-ok-2"}]})
    workers.start("all", env=fake.env(), concurrency=4, kind="threads")
    event_id = publish(order())
    wait_until(lambda: all_done([event_id]), message="all targets terminal")
    assert statuses() == {"sent": 3}
    seen = list(fake.providers["fcm"].seen)
    busy = [s["at"] for s in seen if s["token"] == "fcm-busy"]
    # then the fake saw the retry no sooner than the Retry-After it gave
    assert len(busy) == 2 and busy[1] - busy[0] >= 2.0
    # and the targets that were accepted (or not yet sent) were sent exactly once
    for token in ("fcm-ok-1", "fcm-ok-2"):
        assert [s["status"] for s in seen if s["token"] == token] == [200]


def test_outage_opens_the_circuit_and_everything_is_delivered_when_the_provider_is_back(
        fake: FakeProviders, workers: Workers) -> None:
    # given 30 FCM devices in batches of 5, a circuit that opens after 3 consecutive failures
    load_directory({f"p{i}": [{"channel": "fcm", "token": f"fcm-{i}"}] for i in range(30)})
    env = {**fake.env(), "HERALD_BATCH_SIZE": "5", "HERALD_CHANNEL_CIRCUIT_FAILURES": "3",
           "HERALD_CHANNEL_CIRCUIT_OPEN_S": "1"}
    # when FCM is down as the event arrives, and comes back 4 seconds after the worker first found it down
    fake.providers["fcm"].switches.outage(600)
    workers.start("all", env=env, concurrency=4, kind="threads")
    event_id = publish(order())
    wait_until(lambda: any(s["status"] == 503 for s in fake.providers["fcm"].seen), timeout_s=90,
               message="the first request refused")  # a slow worker start no longer outlasts the outage
    fake.providers["fcm"].switches.outage(4)
    wait_until(lambda: all_done([event_id]), timeout_s=90, message="all targets terminal")
    # then every target is delivered once the provider is back, none dead-lettered
    assert statuses() == {"sent": 30}
    failures = [s for s in fake.providers["fcm"].seen if s["status"] == 503]
    # and the circuit spared the provider: far fewer failed requests than targets x attempts
    assert 0 < len(failures) < 30
    most = rows(select(func.max(Delivery.attempts)))[0][0]
    assert most <= 4


def test_the_in_flight_limit_is_shared_by_two_worker_processes(fake: FakeProviders, workers: Workers) -> None:
    # given a shared limit of 3 requests in flight to FCM, and each request taking 150 ms
    load_directory({f"p{i}": [{"channel": "fcm", "token": f"fcm-{i}"}] for i in range(40)})
    fake.providers["fcm"].switches.latency_ms = 150
    env = {**fake.env(), "HERALD_BATCH_SIZE": "5", "HERALD_FCM_MAX_IN_FLIGHT": "3"}
    # when two separate deliver.fcm worker processes share the work
    workers.start("ingest,enrich,resolve,retry", env=env, concurrency=2, kind="threads")
    workers.start("deliver.fcm", env=env, concurrency=2, kind="prefork")
    workers.start("deliver.fcm", env=env, concurrency=2, kind="prefork")
    event_id = publish(order())
    wait_until(lambda: all_done([event_id]), timeout_s=90, message="all targets terminal")
    # then everything is delivered and the provider never held more than 3 requests at once
    assert statuses() == {"sent": 40}
    assert 2 <= fake.providers["fcm"].max_in_flight <= 3


def test_a_worker_killed_mid_batch_loses_nothing_and_resends_only_what_was_in_flight(
        fake: FakeProviders, workers: Workers) -> None:
    # given 20 targets in batches of 10, every request taking 1.5 s at the provider
    load_directory({f"p{i}": [{"channel": "fcm", "token": f"fcm-{i}"}] for i in range(20)})
    fake.providers["fcm"].switches.latency_ms = 1500
    env = {**fake.env(), "HERALD_BATCH_SIZE": "10"}
    doomed = workers.start("all", env=env, concurrency=2, kind="prefork")
    event_id = publish(order())
    # when the worker is killed with SIGKILL while requests are in flight
    wait_until(lambda: fake.providers["fcm"].in_flight > 0, message="requests in flight")
    workers.kill(doomed, signal.SIGKILL)
    in_flight = {r.id for r in rows(select(Delivery.id).where(Delivery.status == "sending"))}
    sent_before = {r.id for r in rows(select(Delivery.id).where(Delivery.status == "sent"))}
    assert in_flight
    fake.providers["fcm"].switches.latency_ms = 0
    workers.start("all", env=env, concurrency=2, kind="prefork", beat=True)
    wait_until(lambda: all_done([event_id]), timeout_s=120, message="every target terminal")
    # then every target is delivered, the lost attempts recorded, only those in flight resent
    assert statuses() == {"sent": 20}
    lost = {r.delivery_id for r in rows(select(DeliveryAttempt.delivery_id).where(DeliveryAttempt.outcome == "lost"))}
    resent = {r.delivery_id for r in rows(select(DeliveryAttempt.delivery_id).where(DeliveryAttempt.resend))}
    assert lost == in_flight and resent == in_flight
    assert not sent_before & resent


@pytest.mark.expect_dead_letters("the provider refused herald's credentials")
@pytest.mark.expect_log_errors("refused herald's credentials", "dead letter")
def test_an_auth_error_keeps_the_token_dead_letters_the_target_and_raises_an_ops_event(
        fake: FakeProviders, workers: Workers) -> None:
    # given FCM refuses herald's APNs credentials for one target (THIRD_PARTY_AUTH_ERROR)
    fake.providers["fcm"].switches.errors["fcm-ios"] = "THIRD_PARTY_AUTH_ERROR"
    load_directory({"ana": [{"channel": "fcm", "token": "fcm-ios"}], "ben": [{"channel": "fcm", "token": "fcm-ok"}]})
    workers.start("all", env=fake.env(), concurrency=4, kind="threads")
    event_id = publish(order())
    wait_until(lambda: all_done([event_id]), message="all targets terminal")
    # then the target is dead-lettered (replayable once the credentials are fixed), the token kept
    assert statuses() == {"sent": 1, "dead": 1}
    assert rows(select(Device.active).where(Device.token == "fcm-ios")) == [(True,)]
    [letter] = rows(select(DeadLetter.reason, DeadLetter.ref).where(DeadLetter.kind == "delivery"))
    assert "credentials" in letter.reason
    # and operators hear about it through herald itself
    alert = wait_until(lambda: rows(select(EventRow.type, EventRow.data)
                                    .where(EventRow.type == "ops.processing_delayed")),
                       message="the ops event")
    assert alert[0].data["resource"] == "push:fcm" and alert[0].data["metric"] == "auth_error"
