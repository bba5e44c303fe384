"""FCM (Firebase Cloud Messaging, HTTP v1): the channel's spec. The sender is in ``provider.py``.

Settings ``HERALD_FCM_*``; a device holds a registration token or a Firebase installation id (FID).
Credentials: a service-account file, or with none Application Default Credentials (provider.py).
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

# FCM registration tokens are about 160 URL-safe characters, but Google documents no format: herald
# refuses what cannot be one (empty, over 1 KB, other characters). An installation id (FID) is 22
# base64url characters whose first is c, d, e or f (https://firebase.google.com/docs/projects/manage-installations).
FCM_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]{1,1024}")
FCM_FID = re.compile(r"[cdef][A-Za-z0-9_\-]{21}")
# The Android notification channel a page is posted in: the app creates it with high importance (docs/actions.md).
PAGE_CHANNEL = "herald_pages"


class FcmSettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_FCM_", extra="ignore")

    rate_per_s: int = 10000  # FCM's default project quota is 600k/min
    url: str = "https://fcm.googleapis.com"
    credentials_file: Path | None = None  # service-account JSON (default for every app)
    app_credentials: dict[str, Path] = Field(default_factory=dict)  # app -> file, JSON in env
    # Neither file set: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, the
    # metadata server). The project: this, else the credential's own (a service-account file names it).
    project_id: str = ""
    page_channel: str = PAGE_CHANNEL  # Android notification channel id for pages (critical, error)


# https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode
# The FcmError detail's errorCode is the key; a body without one falls back to the HTTP status.
ERRORS: dict[str, Rule] = {
    "UNREGISTERED": Rule("invalid_token", "the app instance is gone: token deactivated"),
    "SENDER_ID_MISMATCH": Rule("invalid_token", "token belongs to another sender: token deactivated"),
    # INVALID_ARGUMENT is special-cased below: only an invalid-token detail prunes.
    "INVALID_ARGUMENT": Rule("permanent", "the message is invalid: token kept, fix the payload"),
    "INVALID_ARGUMENT:token": Rule("invalid_token", "invalid registration token: token deactivated"),
    "QUOTA_EXCEEDED": Rule("transient", "sending quota exceeded: wait at least a minute",
                           min_retry_after_s=60.0, provider_wide=True),
    "UNAVAILABLE": Rule("transient", "FCM overloaded: retry after Retry-After", provider_wide=True),
    "INTERNAL": Rule("transient", "FCM internal error: retry with backoff"),
    "THIRD_PARTY_AUTH_ERROR": Rule("auth", "APNs or Web Push credentials in Firebase refused: tokens kept"),
    "UNSPECIFIED_ERROR": Rule("transient", "unspecified FCM error: retry with backoff"),
    # HTTP status fallbacks (no FcmError detail: OAuth and gateway answers)
    "401": Rule("auth", "herald's access token refused: tokens kept"),
    "403": Rule("auth", "the service account may not send for this project: tokens kept"),
    "404": Rule("permanent", "no such project or endpoint: check HERALD_FCM_URL and the project id"),
    "429": Rule("transient", "rate limited", min_retry_after_s=60.0, provider_wide=True),
    "5xx": Rule("transient", "FCM unavailable: retry with backoff"),
    "4xx": Rule("permanent", "request refused"),
}


def check_address(token: Any, kind: str, app: str) -> str:
    if not isinstance(token, str):
        raise InvalidDevice("a fcm token is a string")
    if kind == "fid" and not FCM_FID.fullmatch(token):
        raise InvalidDevice("an FCM installation id (FID) is 22 characters of A-Z a-z 0-9 _ - "
                            "starting with c, d, e or f")
    if kind == "token" and not FCM_TOKEN.fullmatch(token):
        raise InvalidDevice("an FCM registration token is 1 to 1024 characters of A-Z a-z 0-9 _ - : .")
    return token


def _provider() -> Channel:
    from herald.channels.fcm.provider import FcmChannel

    return FcmChannel()


SPEC = ChannelSpec(
    name="fcm", title="FCM",
    addressing=Addressing("device_token", ("token", "fid"), check_address),
    settings=FcmSettings, errors=ERRORS, provider=_provider, preload="herald.channels.fcm.provider")
