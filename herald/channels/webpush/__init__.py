"""Web Push (RFC 8030, 8291, 8292): the channel's spec. The sender is in ``provider.py``.

Settings ``HERALD_WEBPUSH_*``; a device holds the browser's subscription JSON, checked by
herald/devices.py (the endpoint is a URL someone else chose).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import SettingsConfigDict

from herald.channels.sender import Rule
from herald.channels.spec import Addressing, ChannelSettings, ChannelSpec
from herald.channels.types import Channel


class WebPushSettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_WEBPUSH_", extra="ignore")

    vapid_key_file: Path | None = None  # PEM private key (`herald vapid generate`)
    vapid_subject: str = "mailto:push-admin@example.com"  # RFC 8292: mailto: or https: URL
    # Web Push endpoints on loopback addresses (http or https): for local fakes only, never in production.
    allow_loopback: bool = False


# https://datatracker.ietf.org/doc/html/rfc8030#section-7 and the push services' documented answers
# (https://developer.mozilla.org/en-US/docs/Web/API/Push_API, web.dev "push notifications: web push protocol").
ERRORS: dict[str, Rule] = {
    "404": Rule("invalid_token", "subscription not found: deactivated"),
    "410": Rule("invalid_token", "subscription expired or unsubscribed: deactivated"),
    "413": Rule("permanent", "payload too large for the push service"),
    "429": Rule("transient", "too many requests: retry after Retry-After"),
    "400": Rule("permanent", "request refused (headers or encryption): subscription kept"),
    "401": Rule("auth", "VAPID token refused: subscription kept"),
    "403": Rule("auth", "VAPID key not the one the subscription was made with: subscription kept"),
    "5xx": Rule("transient", "push service unavailable: retry with backoff"),
    "3xx": Rule("permanent", "the endpoint redirects, which no push service does: not followed"),
    "4xx": Rule("permanent", "request refused"),
    # Checked by herald before sending: the endpoint is not one herald may POST to.
    "endpoint": Rule("invalid_token", "endpoint refused (herald/devices.py): deactivated"),
    "resolved": Rule("permanent", "endpoint host resolves to a non-public address: not sent, subscription kept"),
}


def check_address(subscription: Any, kind: str, app: str) -> str:
    from herald.devices import subscription as checked_subscription

    return checked_subscription(subscription)


def _provider() -> Channel:
    from herald.channels.webpush.provider import WebPushChannel

    return WebPushChannel()


SPEC = ChannelSpec(
    name="webpush", title="Web Push",
    addressing=Addressing("subscription", ("subscription",), check_address),
    settings=WebPushSettings, errors=ERRORS, provider=_provider, preload="herald.channels.webpush.provider")
