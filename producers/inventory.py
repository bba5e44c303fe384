"""Declared credentials for integration code: API keys, client secrets, tokens with a known expiry."""

from __future__ import annotations

from datetime import datetime

from herald import db, inventory


def declare_credential(name: str, *, kind: inventory.Kind, expires_at: datetime, environment: str,
                       owner: str | None = None, version: str | None = None) -> int:
    """Add or update a credential in the inventory; the expiry sweep notifies ``owner`` at each threshold.

    A new ``version`` (or, without one, a new expiry date) is a rotation: the thresholds start over.
    Raises :class:`herald.inventory.CredentialError` for a bad kind, owner or environment.
    """
    with db.session() as s:
        return inventory.declare(s, name=name, kind=kind, expires_at=expires_at, environment=environment,
                                   owner=owner, version=version, origin="producer").id
