"""Through the deliver task (Postgres rows, the Redis gate, the fakes): a flow.failed page sounds on every
push channel, and every notification carries a collapse id, an artifact event's (no dedup key) included.

Issue 11, item 6 and the collapse ids of item 7: the iOS page for ``flow.failed`` (severity error) arrived
silently; a copy accepted late must replace the first on the phone rather than show a second.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from sqlalchemy import select

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import db, devices
from herald.channels.sender import ProviderChannel
from herald.channels.webpush.provider import WebPushChannel, topic
from herald.models import Delivery, EventRow, Notification, Person, utcnow
from tests.integration.conftest import fresh_fakes
from tests.integration.helpers import rows
from workers.deliver.delivery import channel_for, deliver_batch

CHANNELS = ("fcm", "apns", "webpush")


@pytest.fixture
def fake(fakes: FakeProviders, clean: None) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    with herald_env(fakes.env()):
        yield fakes
        for name in CHANNELS:
            if name in channel_for.built:
                cast(ProviderChannel, channel_for(name)).close()


def deliver(fakes: FakeProviders, channel: str, *, event_type: str, flow: str, severity: str,
            data: dict[str, Any], dedup_key: str | None) -> int:
    """One event for ``ana``, one device on ``channel``, delivered once; the notification's id."""
    token: Any = {"fcm": "fcm-ana", "apns": "a" * 64}.get(channel)
    app = {"webpush": "portal"}.get(channel, "com.example.admin")
    if channel == "webpush":
        key = cast(WebPushChannel, channel_for("webpush")).vapid.public
        token = json.dumps(fakes.webpush.subscribe(application_server_key=key))
    batch_id, event_id = uuid.uuid4(), uuid.uuid4()
    with db.session() as s:
        s.merge(Person(id="ana", name="Ana"))
        s.flush()
        device = devices.register(s, person_id="ana", channel=channel, token=token, app=app, by="directory")
        s.add(EventRow(id=event_id, type=event_type, flow=flow, source="test", environment="prod",
                       severity=severity, idempotency_key=str(event_id), dedup_key=dedup_key, occurred_at=utcnow(),
                       data=data, status="resolved"))
        s.flush()
        notification = Notification(event_id=event_id, person_id="ana", route="test", reason="test")
        s.add(notification)
        s.flush()
        s.add(Delivery(notification_id=notification.id, event_id=event_id, device_id=device.id,
                       channel=channel, batch_id=batch_id))
        notification_id = notification.id
    deliver_batch(channel, str(batch_id), None)
    assert [status for (status,) in rows(select(Delivery.status))] == ["sent"]
    return int(notification_id)


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_flow_failed_page_sounds(fake: FakeProviders, channel: str) -> None:
    # when a flow.failed (severity error) reaches ana's device
    deliver(fake, channel, event_type="flow.failed", flow="failure", severity="error",
            data={"flow": "orders-to-erp", "error": "HTTP 502"}, dedup_key="flow:orders-to-erp:prod")
    [seen] = fake.providers[channel].seen
    # then the provider got what makes it heard
    if channel == "apns":
        assert seen["payload"]["aps"]["sound"] == "default"
        assert seen["payload"]["aps"]["interruption-level"] == "time-sensitive" and seen["priority"] == "10"
        assert seen["collapse_id"] == "flow:orders-to-erp:prod"
    elif channel == "fcm":
        assert seen["android"]["priority"] == "HIGH"
        assert seen["android"]["notification"]["channel_id"] == "herald_pages"
        assert seen["android"]["notification"]["sound"] == "default"
    else:
        assert seen["urgency"] == "high" and json.loads(seen["text"])["requireInteraction"] is True


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_artifact_event_carries_a_collapse_id_of_its_own(fake: FakeProviders, channel: str) -> None:
    # when an artifact event (no dedup key, severity info) reaches ana's device
    notification_id = deliver(fake, channel, event_type="artifact.deployed", flow="artifact", severity="info",
                              data={"artifact": "orders-api", "kind": "api", "version": "2.4"}, dedup_key=None)
    [seen] = fake.providers[channel].seen
    # then it carries the collapse id of its notification, as every copy of it would
    expected = f"herald-n{notification_id}"
    if channel == "apns":
        assert seen["collapse_id"] == expected and "sound" not in seen["payload"]["aps"]
    elif channel == "fcm":
        assert seen["android"]["collapse_key"] == seen["android"]["notification"]["tag"] == expected
        assert seen["android"]["priority"] == "NORMAL" and "channel_id" not in seen["android"]["notification"]
    else:
        assert seen["topic"] == topic(expected) and seen["urgency"] == "normal"
