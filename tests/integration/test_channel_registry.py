"""A channel added through the registry alone: one spec, registered, and herald delivers through it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic_settings import SettingsConfigDict
from sqlalchemy import select

from herald import channels, db, directory
from herald.channels import Addressing, ChannelSettings, ChannelSpec, Message, Result
from herald.channels.sender import Rule
from herald.errors import InvalidDevice
from herald.models import Delivery, DeliveryAttempt, EventRow, Notification, utcnow
from tests.integration.helpers import rows
from workers.deliver.delivery import channel_for, deliver_batch
from workers.resolve import notify

PAGED: list[Message] = []


class PagerSettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_PAGER_", extra="ignore")

    backend: channels.Backend = "provider"


class PagerChannel:
    """A provider that keeps what it was given: every message is sent."""

    name = "pager"

    def send(self, messages: list[Message]) -> list[Result]:
        PAGED.extend(messages)
        return [Result(m.target.delivery_id, "sent", "200", None) for m in messages]


def check_number(number: Any, kind: str, app: str) -> str:
    if not isinstance(number, str) or not number.replace("-", "").isdigit():
        raise InvalidDevice("a pager number is digits and dashes")
    return number


PAGER = ChannelSpec(
    name="pager", title="Pager",
    addressing=Addressing("device_token", ("token",), check_number),
    settings=PagerSettings, errors={"5xx": Rule("transient", "pager gateway down")},
    provider=PagerChannel)


@pytest.fixture
def pager(clean: None) -> Iterator[ChannelSpec]:
    PAGED.clear()
    channels.register(PAGER)
    try:
        yield PAGER
    finally:
        channels.unregister("pager")
        channel_for.cache_clear()


def test_a_channel_registered_alone_is_routed_resolved_and_delivered(pager: ChannelSpec) -> None:
    # given a person with a pager, and a route that pages her, loaded from a directory
    spec = directory.DirectorySpec.model_validate({
        "people": [{"id": "ana", "name": "Ana", "devices": [{"channel": "pager", "token": "555-0100"}]}],
        "routes": [{"id": "orders", "match": {"types": ["business.*"]}, "recipients": [{"person": "ana"}],
                    "channels": ["pager"]}]})
    event_id = uuid.uuid4()
    with db.session() as s:
        directory.apply(spec, s)
        s.add(EventRow(id=event_id, type="business.order_submitted", flow="business", source="test",
                       environment="prod", severity="info", idempotency_key=str(event_id), dedup_key=None,
                       occurred_at=utcnow(), data={"topic": "orders.eu", "reference": "PO-1"},
                       status="enriched"))
    # when the event is resolved and its batch delivered
    batches = [batch for chunk in notify(event_id, utcnow()) for batch in chunk]
    assert [channel for channel, _ in batches] == ["pager"]
    assert deliver_batch("pager", str(batches[0][1]), None) == 1
    # then the pager got it, and the rows say so
    assert [m.target.token for m in PAGED] == ["555-0100"]
    assert rows(select(DeliveryAttempt.outcome)) == [("sent",)]
    assert rows(select(Delivery.channel, Delivery.status)) == [("pager", "sent")]
    assert rows(select(Notification.status)) == [("sent",)]


def test_a_registered_channel_checks_its_own_addresses(pager: ChannelSpec) -> None:
    with pytest.raises(ValueError, match="digits and dashes"):
        directory.DeviceSpec.model_validate({"channel": "pager", "token": "not a number"})
    with pytest.raises(ValueError, match="Input should be 'fcm', 'apns', 'webpush', 'email' or 'pager'"):
        directory.DeviceSpec.model_validate({"channel": "pigeon", "token": "1"})
