"""Device registration for integration code (the HTTP API comes with the responses work)."""

from __future__ import annotations

from herald import db
from herald.directory import register_device as _register


def register_device(person_id: str, channel: str, token: str, *, token_kind: str = "token",
                    app: str = "default", environment: str = "production") -> int:
    """Register or refresh a device; returns its id. A token seen before moves to ``person_id``."""
    with db.session() as s:
        return _register(s, person_id=person_id, channel=channel, token=token, token_kind=token_kind,
                         app=app, environment=environment).id
