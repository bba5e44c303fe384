"""Device registration for integration code (the HTTP API comes with the responses work)."""

from __future__ import annotations

from typing import Any

from herald import db
from herald import devices as _devices


def register_device(person_id: str, channel: str, token: Any, *, token_kind: str | None = None,
                    app: str = "default", environment: str = "production") -> int:
    """Register or refresh a device; returns its id. A token seen before moves to ``person_id``.

    ``token``: an FCM token or FID, an APNs device token (hex), or a Web Push subscription (JSON
    text or a mapping). APNs needs ``app``: a bundle id or an app HERALD_APNS_TOPICS maps. The
    device registered itself, so a device a provider deactivated is active again.

    Raises :class:`herald.errors.InvalidDevice` (a ValueError) for an address or app herald
    refuses, or an unknown person; nothing is written then.
    """
    with db.session() as s:
        return _devices.register(s, person_id=person_id, channel=channel, token=token, token_kind=token_kind,
                                 app=app, environment=environment, by="device").id
