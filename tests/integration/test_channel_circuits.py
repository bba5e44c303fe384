"""One circuit per provider host, probes that spend no attempts, and the fakes' hang and refused hosts.

Each test delivers real batches (Postgres rows, the Redis gate) in this process through the APNs
fake, calling ``deliver_batch`` as the retry queue would, while one APNs host (production or
sandbox) refuses connections or accepts requests and answers too late. Issue 7: with production
down and sandbox up, production targets used up their attempts behind a circuit that sandbox's
successes kept closed, and the half-open probe was always the batch's first target.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import select, update

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import db, devices
from herald.channels.sender import ProviderChannel
from herald.models import DeadLetter, Delivery, DeliveryAttempt, Device, EventRow, Notification, Person, utcnow
from producers import register_device
from tests.integration.conftest import fresh_fakes
from tests.integration.helpers import rows
from workers.deliver.delivery import channel_for, deliver_batch

SETTINGS = {"HERALD_CHANNEL_CIRCUIT_FAILURES": "2", "HERALD_CHANNEL_CIRCUIT_OPEN_S": "0.5",
            "HERALD_CHANNEL_CIRCUIT_MAX_OPEN_S": "1", "HERALD_MAX_DELIVERY_ATTEMPTS": "3",
            "HERALD_CHANNEL_TIMEOUT_S": "1", "HERALD_RETRY_MAX_S": "1"}


@pytest.fixture
def fake(fakes: FakeProviders, clean: None) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    with herald_env({**fakes.env(), **SETTINGS}):
        yield fakes
        cast(ProviderChannel, channel_for("apns")).close()


def token(name: str) -> str:
    return name.encode().hex().ljust(64, "0")[:64]


def batch(targets: list[tuple[str, str]]) -> uuid.UUID:
    """One business event for ``ana``, one delivery per (token, environment), all in one batch."""
    batch_id, event_id = uuid.uuid4(), uuid.uuid4()
    with db.session() as s:
        s.merge(Person(id="ana", name="Ana"))
        s.flush()
        device_ids = [devices.register(s, person_id="ana", channel="apns", token=t, app="com.example.admin",
                                       environment=env, by="directory").id for t, env in targets]
        s.add(EventRow(id=event_id, type="business.order_submitted", flow="business", source="test",
                    environment="prod", severity="info", idempotency_key=str(event_id), dedup_key="orders:PO-1",
                    occurred_at=utcnow(), data={"topic": "orders.eu", "reference": "PO-1"}, status="resolved"))
        s.flush()
        notification = Notification(event_id=event_id, person_id="ana", route="test", reason="test")
        s.add(notification)
        s.flush()
        for device_id in device_ids:
            s.add(Delivery(notification_id=notification.id, event_id=event_id, device_id=device_id,
                           channel="apns", batch_id=batch_id))
    return batch_id


def deliver_for(batch_id: uuid.UUID, seconds: float, until: Any = None) -> None:
    """Run the batch as the retry queue would, for ``seconds`` or until ``until()`` holds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        deliver_batch("apns", str(batch_id), None)
        if until is not None and until():
            return
        time.sleep(0.1)


def by_token() -> dict[str, Any]:
    return {r.token: r for r in rows(select(Device.token, Device.environment, Delivery.status, Delivery.attempts)
                                     .join(Delivery, Delivery.device_id == Device.id))}


def all_sent() -> bool:
    return all(r.status == "sent" for r in by_token().values())


PRODUCTION = [token(f"prod{i}") for i in range(3)]
SANDBOX = [token(f"sand{i}") for i in range(3)]


@pytest.mark.parametrize(("fault", "host", "down", "up"), [
    ("refused", "apns", PRODUCTION, SANDBOX),  # production gone, sandbox answering
    ("hang", "apns_sandbox", SANDBOX, PRODUCTION),  # sandbox accepts and stalls past the timeout
])
def test_one_host_down_opens_its_own_circuit_and_its_targets_keep_their_attempts(
        fake: FakeProviders, fault: str, host: str, down: list[str], up: list[str]) -> None:
    # given one batch with targets on both APNs hosts, and one host down
    batch_id = batch([(t, "production") for t in PRODUCTION] + [(t, "sandbox") for t in SANDBOX])
    switches = fake.providers["apns"].switches
    if fault == "refused":
        switches.refused.add(host)
        fake.settle()
    else:
        switches.hang_s[host] = 3.0
    # when the batch is retried for several circuit periods
    deliver_for(batch_id, 8)
    # then the other host's targets were sent, and the down host's are pending with attempts to spare
    seen = by_token()
    assert {t: seen[t].status for t in up} == dict.fromkeys(up, "sent")
    assert {t: seen[t].status for t in down} == dict.fromkeys(down, "pending")
    assert max(seen[t].attempts for t in down) <= 2  # before the circuit opened; never a probe's
    assert not rows(select(DeadLetter.id))
    # and when the host is back, everything is delivered
    switches.refused.clear()
    switches.hang_s.clear()
    fake.settle()
    deliver_for(batch_id, 20, until=all_sent)
    assert all_sent()


def test_a_failed_probe_spends_no_attempt_and_the_probe_is_not_always_the_same_target(fake: FakeProviders) -> None:
    # given production gone and three production targets, at most 3 attempts each
    batch_id = batch([(t, "production") for t in PRODUCTION])
    fake.providers["apns"].switches.refused.add("apns")
    fake.settle()
    # when the batch is retried through many half-open probes
    deliver_for(batch_id, 10)
    probes = rows(select(DeliveryAttempt.delivery_id).where(DeliveryAttempt.reason.like("circuit probe%")))
    assert len(probes) >= 3
    # then no target was dead-lettered, and the probes' tries are not counted as attempts
    counted = {r.id: r.attempts for r in rows(select(Delivery.id, Delivery.attempts))}
    tried = rows(select(DeliveryAttempt.delivery_id))
    for delivery_id, attempts in counted.items():
        assert attempts == sum(1 for t in tried if t.delivery_id == delivery_id) \
            - sum(1 for p in probes if p.delivery_id == delivery_id)
        assert attempts < 3
    assert {r.status for r in rows(select(Delivery.status))} == {"pending"}
    assert not rows(select(DeadLetter.id))
    # and once production is back, every target is delivered
    fake.providers["apns"].switches.refused.clear()
    fake.settle()
    deliver_for(batch_id, 20, until=all_sent)
    assert all_sent()


def test_a_410_prunes_a_directory_device_whatever_its_bookkeeping_time(fake: FakeProviders) -> None:
    # given two devices APNs answers 410 for, with a timestamp an hour ago
    dead_by_file, renewed = token("file"), token("renewed")
    fake.providers["apns"].switches.dead_tokens.update({dead_by_file, renewed})
    fake.apns.unregistered_at_ms = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    batch_id = batch([(dead_by_file, "production"), (renewed, "production")])
    # the first named only by the directory, its registered_at moved later than the 410 (as an old
    # `directory apply` did); the second registered again by the app itself, after the 410
    with db.session() as s:
        s.execute(update(Device).where(Device.token == dead_by_file).values(registered_at=utcnow()))
    register_device("ana", "apns", renewed, app="com.example.admin")
    deliver_for(batch_id, 5, until=lambda: all(r.status != "pending" for r in by_token().values()))
    active = dict(rows(select(Device.token, Device.active)))
    # then the directory's device is deactivated, the re-registered one kept
    assert active == {dead_by_file: False, renewed: True}
    assert {t: r.status for t, r in by_token().items()} == {dead_by_file: "failed", renewed: "failed"}
