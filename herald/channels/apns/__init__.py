"""APNs (Apple Push Notification service, HTTP/2 with token auth): the channel's spec. The sender is
in ``provider.py``.

Settings ``HERALD_APNS_*``; a device holds its token as hex, and an app whose apns-topic is known:
one ``HERALD_APNS_TOPICS`` maps, or a bundle id itself (``com.example.app``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from herald.channels.sender import Rule
from herald.channels.spec import Addressing, ChannelSettings, ChannelSpec
from herald.channels.types import Channel
from herald.errors import InvalidDevice

# APNs device tokens are 32 bytes today, printed as 64 hex digits; Apple says they may grow.
APNS_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
BUNDLE_ID = re.compile(r"[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+")


class ApnsSettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_APNS_", extra="ignore")

    key_file: Path | None = None  # the .p8 signing key
    key_id: str = ""
    team_id: str = ""
    topics: dict[str, str] = Field(default_factory=dict)  # app -> apns-topic (default: the app)
    production_url: str = "https://api.push.apple.com"
    sandbox_url: str = "https://api.sandbox.push.apple.com"
    ca_file: Path | None = None  # extra CA to trust (the local fake's); None = system CAs
    jwt_refresh_s: float = 1800.0  # Apple: refresh every 20 to 60 minutes, never per request
    connections: int = 2  # HTTP/2 connections per host and process
    # True only when the app holds Apple's Critical Alerts entitlement: a critical page then plays through the
    # mute switch and Do Not Disturb (interruption-level "critical"); otherwise pages are "time-sensitive".
    critical_alerts: bool = False


# Apple's reason strings, by documented status (the table in the second link above).
ERRORS: dict[str, Rule] = {
    "BadCollapseId": Rule("permanent", "collapse id too long"),
    # BadDeviceToken is checked against the other environment first (see send_one).
    "BadDeviceToken": Rule("invalid_token", "token invalid in both sandbox and production: deactivated"),
    "BadExpirationDate": Rule("permanent", "bad apns-expiration"),
    "BadMessageId": Rule("permanent", "bad apns-id"),
    "BadPriority": Rule("permanent", "bad apns-priority"),
    "BadTopic": Rule("permanent", "bad apns-topic: check HERALD_APNS_TOPICS"),
    "DeviceTokenNotForTopic": Rule("permanent", "token belongs to another app: token kept"),
    "DuplicateHeaders": Rule("permanent", "duplicate headers"),
    "IdleTimeout": Rule("transient", "idle connection timed out: retry", fresh_connection=True),
    "InvalidPushType": Rule("permanent", "bad apns-push-type"),
    "MissingDeviceToken": Rule("permanent", "no device token in the path"),
    "MissingTopic": Rule("permanent", "apns-topic required: check HERALD_APNS_TOPICS"),
    "PayloadEmpty": Rule("permanent", "empty payload"),
    "TopicDisallowed": Rule("permanent", "topic not allowed for this key"),
    "BadCertificate": Rule("auth", "certificate refused: tokens kept"),
    "BadCertificateEnvironment": Rule("auth", "certificate for the other environment: tokens kept"),
    "ExpiredProviderToken": Rule("auth", "provider token expired even after regeneration: tokens kept"),
    "Forbidden": Rule("auth", "forbidden: tokens kept"),
    "InvalidProviderToken": Rule("auth", "provider token refused (key id, team id or key): tokens kept"),
    "MissingProviderToken": Rule("auth", "no provider token: tokens kept"),
    "UnrelatedKeyIdInToken": Rule("auth", "key id not related to this team: tokens kept"),
    "BadPath": Rule("permanent", "bad request path"),
    "MethodNotAllowed": Rule("permanent", "method not allowed"),
    # 410, checked against the device's registration time first (see send_one).
    "ExpiredToken": Rule("invalid_token", "token expired: deactivated"),
    "Unregistered": Rule("invalid_token", "token no longer active for the topic: deactivated"),
    "Unregistered:reregistered": Rule("permanent", "APNs invalidated the token before it was registered "
                                                   "again: token kept"),
    "PayloadTooLarge": Rule("permanent", "payload over 4 KB"),
    "TooManyProviderTokenUpdates": Rule("transient", "provider token updated too often: regeneration paused"),
    "TooManyRequests": Rule("transient", "too many requests to this device: back off for this device",
                            min_retry_after_s=30.0),
    "InternalServerError": Rule("transient", "APNs internal error: retry on a fresh connection",
                                fresh_connection=True),
    "ServiceUnavailable": Rule("transient", "APNs unavailable: retry on a fresh connection",
                               fresh_connection=True),
    "Shutdown": Rule("transient", "APNs server shutting down: retry on a fresh connection", fresh_connection=True),
    # Answers without a known reason, by status class.
    "5xx": Rule("transient", "APNs error: retry on a fresh connection", fresh_connection=True),
    "4xx": Rule("permanent", "request refused"),
}

def apns_topic(app: str, topics: dict[str, str] | None = None) -> str | None:
    """The apns-topic of an app: what HERALD_APNS_TOPICS maps it to, or the app if it is a bundle id."""
    if topics is None:
        topics = ApnsSettings.current().topics
    topic = topics.get(app, app)
    return topic if BUNDLE_ID.fullmatch(topic) else None


def check_address(token: Any, kind: str, app: str) -> str:
    if not isinstance(token, str):
        raise InvalidDevice("a apns token is a string")
    if not APNS_TOKEN.fullmatch(token):
        raise InvalidDevice("an APNs device token is 64 to 200 hexadecimal digits")
    if apns_topic(app) is None:
        raise InvalidDevice(f"APNs needs an app whose topic is known: {app!r} is neither in HERALD_APNS_TOPICS "
                            "nor a bundle id like com.example.app")
    return token.lower()


def _provider() -> Channel:
    from herald.channels.apns.provider import ApnsChannel

    return ApnsChannel()


SPEC = ChannelSpec(
    name="apns", title="APNs",
    addressing=Addressing("device_token", ("token",), check_address, provider_corrects_environment=True),
    settings=ApnsSettings, errors=ERRORS, provider=_provider, preload="herald.channels.apns.provider")
