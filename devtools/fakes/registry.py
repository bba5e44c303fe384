"""The fakes registry: one local fake per registered channel (herald/channels/registry.py), by name.

Each entry says which fake stands in for the channel's provider and which settings point herald's
channel at it (:meth:`FakeProviders.env` adds ``HERALD_<NAME>_BACKEND=provider`` for each).
``tests/unit/test_fakes_registry.py`` fails when a registered channel has no fake here. A new fake
is also started by :class:`devtools.fakes.server.FakeProviders` (its listener and URL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devtools.fakes import keys as fake_keys
from devtools.fakes.apns import FakeApns
from devtools.fakes.fcm import FakeFcm
from devtools.fakes.smtp import FakeSmtp
from devtools.fakes.webpush import FakeWebPush

if TYPE_CHECKING:
    from devtools.fakes.server import FakeProviders


@dataclass(frozen=True)
class Fake:
    """One channel's fake: its class, and the environment that points herald at a running one."""

    server: type
    env: Callable[[FakeProviders], dict[str, str]]


def _fcm_env(fakes: FakeProviders) -> dict[str, str]:
    return {"HERALD_FCM_URL": fakes.urls["fcm"],
            "HERALD_FCM_CREDENTIALS_FILE": str(fakes.keys.fcm_service_account)}


def _apns_env(fakes: FakeProviders) -> dict[str, str]:
    return {"HERALD_APNS_KEY_FILE": str(fakes.keys.apns_key_file),
            "HERALD_APNS_KEY_ID": fake_keys.KEY_ID, "HERALD_APNS_TEAM_ID": fake_keys.TEAM_ID,
            "HERALD_APNS_PRODUCTION_URL": fakes.urls["apns"], "HERALD_APNS_SANDBOX_URL": fakes.urls["apns_sandbox"],
            "HERALD_APNS_CA_FILE": str(fakes.keys.ca_file)}


def _webpush_env(fakes: FakeProviders) -> dict[str, str]:
    return {"HERALD_WEBPUSH_VAPID_KEY_FILE": str(fakes.keys.vapid_key_file),
            "HERALD_WEBPUSH_VAPID_SUBJECT": "mailto:push-admin@example.com",
            # The Web Push fake's subscriptions point at this machine; herald refuses that by default.
            "HERALD_WEBPUSH_ALLOW_LOOPBACK": "true"}


def _email_env(fakes: FakeProviders) -> dict[str, str]:
    host, _, port = fakes.urls["email"].removeprefix("smtp://").rpartition(":")
    return {"HERALD_EMAIL_SMTP_HOST": host, "HERALD_EMAIL_SMTP_PORT": port, "HERALD_EMAIL_SMTP_TLS": "none",
            "HERALD_EMAIL_FROM_ADDRESS": "herald@example.com"}


FAKES: dict[str, Fake] = {
    "fcm": Fake(FakeFcm, _fcm_env),
    "apns": Fake(FakeApns, _apns_env),
    "webpush": Fake(FakeWebPush, _webpush_env),
    "email": Fake(FakeSmtp, _email_env),
}
