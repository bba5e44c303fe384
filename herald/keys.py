"""API keys for integration code: each key acts in one environment with one scope.

A key reads ``hk_<id>_<secret>``: the id is its public part (the row's primary key, what ``herald keys
list`` shows and ``revoke`` takes), the secret is 32 random bytes. Only the SHA-256 of the whole key is
stored (``api_keys.secret_hash``): 256 random bits need no slow hash, and a stolen table yields no key.
The key is shown once, by :func:`create`; nobody can show it again.

Every door calls :func:`authenticate` with the scope it needs and, when the request names one, the
environment it acts in: a ``dev`` key never publishes, answers or reads in ``prod``. A refusal is a
:class:`KeyRefused` whose ``status`` is what the door answers (401: not a key we know; 403: a good key
used for something it may not do) and whose ``reason`` never repeats the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.audit import audit
from herald.models import ApiKey, utcnow
from herald.settings import get_settings

__all__ = ["SCOPES", "KeyInfo", "KeyRefused", "authenticate", "create", "list_keys", "revoke"]

SCOPES = ("publish", "devices", "answers", "read")

PREFIX = "hk"
# hk_ + 16 hex digits + _ + token_urlsafe(32) (43 characters of [A-Za-z0-9_-]); a little slack on the
# secret's length, never a dot or a space (so a key is never mistaken for a JWT, and never wraps).
_KEY = re.compile(r"hk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{32,64})")


class KeyRefused(Exception):
    """A presented API key may not do what was asked: ``status`` 401 (unknown, malformed, revoked) or 403."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: everything but its secret."""

    id: str
    environment: str
    scope: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def create(s: Session, *, environment: str, scope: str, label: str = "",
           created_by: str | None = None) -> tuple[KeyInfo, str]:
    """A new key for ``environment`` and ``scope``; returns its description and the key itself, the only
    time the key exists outside the caller (ValueError: an environment or scope herald does not know)."""
    environments = get_settings().environments
    if environment not in environments:
        raise ValueError(f"unknown environment {environment!r} (HERALD_ENVIRONMENTS: {', '.join(environments)})")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r} (one of: {', '.join(SCOPES)})")
    if len(label) > 255:
        raise ValueError("label longer than 255 characters")
    key_id = secrets.token_hex(8)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(id=key_id, environment=environment, scope=scope, label=label, secret_hash=_digest(key),
                 created_at=utcnow(), created_by=created_by)
    s.add(row)
    audit(s, created_by or "cli", "api_key.created", "api_key", key_id, environment=environment, scope=scope,
          label=label)
    s.flush()
    return _info(row), key


def authenticate(s: Session, presented: str, *, scope: str, environment: str | None = None) -> KeyInfo:
    """The key ``presented`` (as sent, ``Bearer`` already stripped) if it may act with ``scope`` in
    ``environment`` (None: the request names none, the key's own applies); records when it was last used.

    Raises KeyRefused: 401 malformed, unknown or revoked; 403 another scope or another environment.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    row = _verified(s, presented)
    if row.revoked_at is not None:
        raise KeyRefused(f"API key {row.id} was revoked")
    if row.scope != scope:
        raise KeyRefused(f"API key {row.id} has the {row.scope!r} scope; this needs {scope!r}", 403)
    if environment is not None and row.environment != environment:
        raise KeyRefused(f"API key {row.id} belongs to environment {row.environment!r} and cannot act in "
                         f"environment {environment!r}", 403)
    row.last_used_at = utcnow()
    s.flush()
    return _info(row)


def revoke(s: Session, key_id: str, *, revoked_by: str | None = None) -> KeyInfo:
    """Refuse the key from now on (LookupError: no such key). Revoking twice keeps the first time."""
    row = s.get(ApiKey, key_id, with_for_update=True)
    if row is None:
        raise LookupError(f"no API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit(s, revoked_by or "cli", "api_key.revoked", "api_key", key_id, environment=row.environment,
              scope=row.scope)
        s.flush()
    return _info(row)


def list_keys(s: Session) -> list[KeyInfo]:
    """Every key, revoked ones included, oldest first."""
    return [_info(row) for row in s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))]


def _verified(s: Session, presented: str) -> ApiKey:
    """The row of a well-formed key whose secret matches; KeyRefused (401) otherwise."""
    match = _KEY.fullmatch(presented.strip())
    if match is None:
        raise KeyRefused("malformed API key (expected hk_<id>_<secret>)")
    row = s.get(ApiKey, match["id"])
    # One answer for an unknown id and a wrong secret: the id alone proves nothing.
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(presented.strip())):
        raise KeyRefused("unknown API key")
    return row


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(id=row.id, environment=row.environment, scope=row.scope, label=row.label,
                   created_at=row.created_at, last_used_at=row.last_used_at, revoked_at=row.revoked_at)
