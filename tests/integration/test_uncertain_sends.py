"""A request whose outcome is unknown is recorded as such, and its resend as a resend of it.

Issue 8, item 5: a provider froze (SIGSTOP) for 60 s; the first requests timed out, were retried,
and the provider processed both copies: 26 people got the same push twice, recorded as two plain
sends. Each test delivers a real batch (Postgres rows, the Redis gate) in this process through one
fake provider, calling ``deliver_batch`` as the retry queue would:

- the fake accepts the request and answers after herald's timeout (its ``hang_s`` switch): the
  attempt is ``uncertain``, the next one a resend after an uncertain send, the fake saw both copies,
  and both carry the same collapse id / apns-collapse-id / Topic (so the phone shows one);
- the fake drops the connection while it holds the request: uncertain as well (HTTP/2 must not
  resend such a stream on a new connection by itself);
- the host refuses connections (``refused``): the request never left, a plain transient failure.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from sqlalchemy import select, update

from devtools.fakes import FakeProviders
from devtools.fakes.registry import FAKES
from devtools.fakes.testing import herald_env
from herald import db, devices
from herald.channels.sender import ProviderChannel
from herald.channels.webpush.provider import WebPushChannel
from herald.models import Delivery, DeliveryAttempt, EventRow, Notification, Person, utcnow
from tests.integration.conftest import fresh_fakes
from tests.integration.helpers import rows
from workers.deliver.delivery import channel_for, deliver_batch

SETTINGS = {"HERALD_CHANNEL_TIMEOUT_S": "1", "HERALD_RETRY_MAX_S": "0.2", "HERALD_MAX_DELIVERY_ATTEMPTS": "5"}
HANG_S = 3.0
CHANNELS = list(FAKES)  # every channel with a fake (devtools/fakes/registry.py)


@pytest.fixture
def fake(fakes: FakeProviders, clean: None) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    with herald_env({**fakes.env(), **SETTINGS}):
        yield fakes
        for name in CHANNELS:
            if name in channel_for.built:
                cast(ProviderChannel, channel_for(name)).close()


def one_target(fakes: FakeProviders, channel: str) -> uuid.UUID:
    """A business event (it has no dedup key) for ``ana``, one device on ``channel``, in one batch."""
    token: Any = {"fcm": "fcm-ana", "apns": "a" * 64, "email": "ana@example.com"}.get(channel)
    app = {"apns": "com.example.admin", "webpush": "portal"}.get(channel, "com.example.admin")
    if channel == "webpush":
        key = cast(WebPushChannel, channel_for("webpush")).vapid.public
        token = json.dumps(fakes.webpush.subscribe(application_server_key=key))
    batch_id, event_id = uuid.uuid4(), uuid.uuid4()
    with db.session() as s:
        s.merge(Person(id="ana", name="Ana"))
        s.flush()
        device = devices.register(s, person_id="ana", channel=channel, token=token, app=app, by="directory")
        s.add(EventRow(id=event_id, type="business.order_submitted", flow="business", source="test",
                    environment="prod", severity="info", idempotency_key=str(event_id), dedup_key=None,
                    occurred_at=utcnow(), data={"topic": "orders.eu", "reference": "PO-1"}, status="resolved"))
        s.flush()
        notification = Notification(event_id=event_id, person_id="ana", route="test", reason="test")
        s.add(notification)
        s.flush()
        s.add(Delivery(notification_id=notification.id, event_id=event_id, device_id=device.id,
                       channel=channel, batch_id=batch_id))
    return batch_id


def attempts() -> list[Any]:
    return rows(select(DeliveryAttempt.attempt, DeliveryAttempt.outcome, DeliveryAttempt.reason,
                       DeliveryAttempt.resend).order_by(DeliveryAttempt.id))


def status() -> str:
    [(value,)] = rows(select(Delivery.status))
    return str(value)


def deliver_until_sent(channel: str, batch_id: uuid.UUID, seconds: float = 15) -> None:
    """Run the batch as the retry queue would until its target is sent."""
    deadline = time.time() + seconds
    while time.time() < deadline and status() != "sent":
        with db.session() as s:  # due now: the backoff is not what these tests are about
            s.execute(update(Delivery).values(due_at=utcnow()))
        deliver_batch(channel, str(batch_id), None)
    assert status() == "sent"


def collapse_ids(fakes: FakeProviders, channel: str) -> list[Any]:
    """The collapse id of every copy the fake saw, as that provider takes it."""
    seen = list(fakes.providers[channel].seen)
    if channel == "fcm":
        return [(e.get("android") or {}).get("collapse_key") for e in seen]
    if channel == "apns":
        return [e.get("collapse_id") for e in seen]
    if channel == "email":  # one Message-ID per delivery, the same on every copy (herald/channels/email/message.py)
        return [e.get("message_id") for e in seen]
    return [e.get("topic") for e in seen]


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_answer_after_the_timeout_is_an_uncertain_send_and_its_resend_says_so(
        fake: FakeProviders, channel: str) -> None:
    # given one target, and a provider that accepts requests and answers after herald's timeout
    batch_id = one_target(fake, channel)
    provider = fake.providers[channel]
    provider.switches.hang_s[channel] = HANG_S
    # when the batch is sent
    deliver_batch(channel, str(batch_id), None)
    # then the attempt is uncertain with its reason, and the target is pending again
    [first] = attempts()
    assert (first.attempt, first.outcome, first.resend) == (1, "uncertain", False)
    assert "no answer after the request was sent" in first.reason
    assert status() == "pending"
    # when the provider answers again and the retry runs
    provider.switches.hang_s.clear()
    deliver_until_sent(channel, batch_id)
    # then the copy that went out is recorded as a resend after the uncertain send
    first, second = attempts()
    assert (second.attempt, second.outcome, second.resend) == (2, "sent", True)
    assert second.reason.startswith("resend after an uncertain send (attempt 1)")
    # and the provider got both copies, with the same collapse id: the phone shows one notification
    deadline = time.time() + HANG_S + 5
    while len(provider.seen) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert provider.requests == 2
    ids = collapse_ids(fake, channel)
    assert len(ids) == 2 and ids[0] and ids[0] == ids[1]


def test_a_connection_lost_after_sending_is_uncertain_and_http2_does_not_resend_it(fake: FakeProviders) -> None:
    # given an APNs target, and APNs holding the request longer than the timeout allows
    batch_id = one_target(fake, "apns")
    provider = fake.providers["apns"]
    provider.switches.hang_s["apns"] = HANG_S
    worker = threading.Thread(target=deliver_batch, args=("apns", str(batch_id), None))
    worker.start()
    # when APNs goes away (drops its connections) while it holds the request
    deadline = time.time() + 5
    while provider.in_flight == 0 and time.time() < deadline:
        time.sleep(0.01)
    provider.switches.refused.add("apns")
    worker.join(10)
    # then the attempt is uncertain, and the client did not resend the stream on a new connection
    [first] = attempts()
    assert first.outcome == "uncertain", first
    assert provider.requests == 1
    # and once APNs is back, the resend is recorded as one
    provider.switches.refused.clear()
    provider.switches.hang_s.clear()
    fake.settle()
    deliver_until_sent("apns", batch_id)
    assert [(a.outcome, a.resend) for a in attempts()] == [("uncertain", False), ("sent", True)]


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_refused_connection_never_left_a_plain_transient_failure(fake: FakeProviders, channel: str) -> None:
    # given one target, and the provider's host refusing connections
    batch_id = one_target(fake, channel)
    provider = fake.providers[channel]
    provider.switches.refused.add(channel)
    fake.settle()
    # when the batch is sent
    deliver_batch(channel, str(batch_id), None)
    # then the attempt is a plain transient failure, not an uncertain one
    [first] = attempts()
    assert (first.outcome, first.resend) == ("transient", False)
    assert first.reason.startswith("connection:")
    # and once the host is back, the copy that goes out is the only one, not a resend
    provider.switches.refused.clear()
    fake.settle()
    deliver_until_sent(channel, batch_id)
    assert [(a.outcome, a.resend) for a in attempts()] == [("transient", False), ("sent", False)]
    assert provider.requests == 1
    assert collapse_ids(fake, channel)[0]  # a business event has no dedup key: collapsed per notification
