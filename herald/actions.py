"""Action tokens: what lets a tap on a notification answer it, with no sign-in.

Each actionable notification carries one token per action it offers (acknowledge, approve, ...),
minted for its recipient: the token names the notification, the person and the action, and
expires at the notification's answer deadline (an approval's ``expires_at``; an incident page
``HERALD_ACTION_TOKEN_TTL_S`` after the notification was created). ``POST /v1/actions`` applies it
(herald/answers.py ``apply_token``), once: the token id is the notification and the action, so
every copy of one notification (each device, each resend) shares the one use.

A token is compact, since a push carries up to three within 4 KB (about 100 bytes each)::

    <key id>.<claims>.<signature>

``claims`` is base64url of the JSON array ``[notification id, person id, action code, expiry
(Unix seconds)]``, and ``signature`` base64url of HMAC-SHA256 over ``<key id>.<claims>`` with
that key's secret. The key id lets keys rotate: the keyring's first key signs, the others only
verify, and a token whose key was removed from the keyring is refused (docs/actions.md).

The keyring is ``HERALD_ACTION_KEYS`` ("kid:secret,kid2:secret2") or ``HERALD_ACTION_KEYS_FILE``
(one ``kid secret`` per line, re-read when it changes). Neither set: on the embedded SQLite
default herald generates ``<data dir>/action-keys`` once (0600) and reuses it; with a database
server every process must share the keys, so minting refuses until they are configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.errors import HeraldError
from herald.models import Approval, EventRow, Incident, Notification, Person
from herald.safefiles import read_regular
from herald.settings import Settings, get_settings
from herald.signin import identity_names

__all__ = ["ACTIONS", "CATEGORIES", "TITLES", "ActionClaims", "ActionKeysMissing", "Offer", "TokenRefused",
           "keyring", "mint", "names", "offer", "token_id", "tokens_for", "verify"]

# What each kind of notification offers, in the order a phone shows them (a browser shows the first two).
ACTIONS: dict[str, tuple[str, ...]] = {"incident": ("acknowledge", "resolve", "follow_up"),
                                       "approval": ("approve", "reject", "request_info")}
# The APNs category (and its name on every platform) an app registers with these actions.
CATEGORIES = {"incident": "HERALD_INCIDENT", "approval": "HERALD_APPROVAL"}
# The buttons' words where herald shows them itself (Web Push); an app uses its own, localized.
TITLES = {"acknowledge": "Acknowledge", "resolve": "Resolve", "follow_up": "Follow up",
          "approve": "Approve", "reject": "Reject", "request_info": "Ask for info"}

# Short codes in the token, to keep three tokens small.
_CODES = {"acknowledge": "ack", "resolve": "res", "follow_up": "fup",
          "approve": "apr", "reject": "rej", "request_info": "inf"}
_NAMES = {code: name for name, code in _CODES.items()}

KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
MIN_SECRET_CHARS = 32  # 256 bits as base64 or hex carries more: RFC 7518 section 3.2 asks HS256 for >= 256
MAX_TOKEN_CHARS = 1024
MAX_KEYS_FILE_BYTES = 64 * 1024
GENERATED_FILE = "action-keys"


class TokenRefused(HeraldError):
    """An action token that cannot be used: ``reason`` says why, ``status`` the HTTP answer."""

    def __init__(self, reason: str, status: int) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class ActionKeysMissing(HeraldError):
    """No action key is configured where herald may not generate one (a database server)."""


@dataclass(frozen=True)
class ActionClaims:
    token_id: str
    notification_id: int
    person_id: str
    action: str
    expires_at: datetime
    key_id: str


def token_id(notification_id: int, action: str) -> str:
    """The id a token's single use is stored under: every copy of one notification's action shares it."""
    return f"{notification_id}:{action}"


# --- the keyring ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Keyring:
    """Secrets by key id; ``signing`` is the first one's id."""

    keys: dict[str, bytes]
    signing: str


def parse_keys(pairs: Iterable[tuple[str, str]], where: str) -> Keyring:
    keys: dict[str, bytes] = {}
    for kid, secret in pairs:
        if not KEY_ID.fullmatch(kid):
            raise ValueError(f"{where}: key id {kid[:20]!r} is not 1-16 letters, digits, '-' or '_'")
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"{where}: the secret of key {kid!r} has {len(secret)} characters, at least "
                             f"{MIN_SECRET_CHARS} needed (secrets.token_urlsafe(32) makes one)")
        if kid in keys:
            raise ValueError(f"{where}: key id {kid!r} appears twice")
        keys[kid] = secret.encode()
    if not keys:
        raise ValueError(f"{where}: no key")
    return Keyring(keys, next(iter(keys)))


def _from_setting(value: str) -> Keyring:
    pairs = []
    for item in value.split(","):
        if item.strip():
            kid, sep, secret = item.strip().partition(":")
            if not sep:
                raise ValueError("HERALD_ACTION_KEYS: each key is kid:secret, separated by commas")
            pairs.append((kid.strip(), secret.strip()))
    return parse_keys(pairs, "HERALD_ACTION_KEYS")


def _from_file(path: Path) -> Keyring:
    text = read_regular(path, max_bytes=MAX_KEYS_FILE_BYTES).decode("utf-8", "replace")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected 'kid secret'")
        pairs.append((fields[0], fields[1]))
    return parse_keys(pairs, str(path))


def _generate(path: Path) -> None:
    """Write a fresh keyring file once, atomically: of processes starting together, one file wins."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, f"# herald action-token keys; the first signs (docs/actions.md)\n"
                     f"k1 {secrets.token_urlsafe(32)}\n".encode())
    finally:
        os.close(fd)
    try:
        os.link(scratch, path)  # fails if another process was first; its file is the one used
    except FileExistsError:
        pass
    finally:
        os.unlink(scratch)


class _Keys:
    """The keyring of the current settings, read once; a keys file is read again when it changes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: Settings | None = None
        self.stamp: tuple[int, int, int] | None = None
        self.ring: Keyring | None = None

    def __call__(self, *, minting: bool) -> Keyring:
        settings = get_settings()
        with self.lock:
            if settings.action_keys is not None:
                if self.settings is not settings or self.ring is None:
                    self.ring, self.settings = _from_setting(settings.action_keys.get_secret_value()), settings
                return self.ring
            path = settings.action_keys_file
            if path is None:
                if settings.database_url is not None and not settings.database_url.startswith("sqlite"):
                    raise ActionKeysMissing(
                        "no action-token key: set HERALD_ACTION_KEYS or HERALD_ACTION_KEYS_FILE, the same in every "
                        "herald process (docs/actions.md)")
                path = settings.data_dir / GENERATED_FILE
                if not path.exists() and minting:
                    _generate(path)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                raise ActionKeysMissing(f"no action-token keys: {path} does not exist") from None
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
            if self.settings is not settings or self.stamp != stamp or self.ring is None:
                self.ring, self.settings, self.stamp = _from_file(path), settings, stamp
            return self.ring

    def clear(self) -> None:
        with self.lock:
            self.settings, self.stamp, self.ring = None, None, None


keyring = _Keys()


# --- tokens ---------------------------------------------------------------------------------------

def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())


def mint(notification_id: int, person_id: str, action: str, expires_at: datetime) -> str:
    """A token that lets ``person_id`` apply ``action`` to the notification until ``expires_at``.

    Raises :class:`ActionKeysMissing` when no key is configured on a database server.
    """
    if action not in _CODES:
        raise ValueError(f"unknown action {action!r}")
    ring = keyring(minting=True)
    claims = json.dumps([notification_id, person_id, _CODES[action], int(expires_at.timestamp())],
                        separators=(",", ":"), ensure_ascii=False)
    signed = f"{ring.signing}.{_b64(claims.encode())}"
    return f"{signed}.{_sign(ring.keys[ring.signing], signed)}"


def verify(token: str, now: datetime | None = None) -> ActionClaims:
    """The claims of a genuine, unexpired token signed by a key still in the keyring.

    Not single use: the caller records the token id (herald/answers.py ``apply_token``).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise TokenRefused("malformed action token", 400)
    kid, claims, signature = token.split(".")
    try:
        ring = keyring(minting=False)
    except ActionKeysMissing:
        raise TokenRefused("action tokens are not configured on this server", 401) from None
    secret = ring.keys.get(kid)
    if secret is None:
        raise TokenRefused(f"action token signed with an unknown or removed key ({kid[:16]!r})", 401)
    if not hmac.compare_digest(_sign(secret, f"{kid}.{claims}"), signature):
        raise TokenRefused("action token signature does not match (forged or altered)", 401)
    try:
        notification_id, person_id, code, expiry = json.loads(_unb64(claims))
        action = _NAMES[code]
        if not (isinstance(notification_id, int) and isinstance(person_id, str) and isinstance(expiry, int)):
            raise TypeError
        expires_at = datetime.fromtimestamp(expiry, UTC)
    except (ValueError, TypeError, KeyError, OverflowError, OSError):
        raise TokenRefused("malformed action token claims", 400) from None
    if (now or datetime.now(UTC)) >= expires_at:
        raise TokenRefused(f"action token expired at {expires_at.isoformat()}", 410)
    return ActionClaims(token_id(notification_id, action), notification_id, person_id, action, expires_at, kid)


# --- what a notification offers -------------------------------------------------------------------

@dataclass(frozen=True)
class Offer:
    """The actions one event's notifications offer, and until when; minted per recipient."""

    kind: str  # incident, approval
    actions: tuple[str, ...]
    expires_at: datetime | None  # an approval's deadline; None: each notification's created_at + the TTL
    requester: str | None = None  # an approval's requester, as the event named them

    @property
    def category(self) -> str:
        return CATEGORIES[self.kind]

    def for_person(self, names: set[str]) -> bool:
        """False for an approval's requester, under any of the recipient's ``names`` (:func:`names`): the
        requester has no vote of their own."""
        return self.requester is None or self.requester.strip().casefold() not in names

    def deadline(self, created_at: datetime) -> datetime:
        if self.expires_at is not None:
            return self.expires_at
        return created_at + timedelta(seconds=get_settings().action_token_ttl_s)

    def tokens(self, notification_id: int, person_id: str, created_at: datetime) -> dict[str, str]:
        expires_at = self.deadline(created_at)
        return {action: mint(notification_id, person_id, action, expires_at) for action in self.actions}


def names(person: Any, person_id: str) -> set[str]:
    """Every name a recipient goes by, normalized (herald/signin.py ``identity_names``): the notification's
    person id, and the directory's email and aliases."""
    if person is None:
        return identity_names(person_id, None, None)
    return identity_names(person_id, person.email, person.aliases)


# The flows whose events can belong to an incident (herald/flows.py: a failure opens or joins one; the
# credential sweep opens one when a credential expires).
INCIDENT_FLOWS = ("failure", "credential")


def offer(s: Session, event: Any) -> Offer | None:
    """What the notifications of ``event`` (an EventRow, or a row with its columns) offer; None: nothing.

    A flow failure that opened or joined an incident still open, and a credential expiry that herald
    opened an incident for, offer acknowledge, resolve (for a credential: rotated) and follow-up; an
    approval request still pending offers its votes until it expires.
    """
    if event.flow in INCIDENT_FLOWS and event.incident_id is not None:
        status = s.scalar(select(Incident.status).where(Incident.id == event.incident_id))
        if status is None or status == "resolved":
            return None
        return Offer("incident", ACTIONS["incident"], None)
    if event.type == "approval.requested":
        approval = s.execute(select(Approval.status, Approval.expires_at, Approval.requester)
                             .where(Approval.event_id == event.id)).first()
        if approval is None or approval.status != "pending" or approval.expires_at <= datetime.now(UTC):
            return None
        return Offer("approval", ACTIONS["approval"], approval.expires_at, approval.requester)
    return None


def tokens_for(s: Session, notification: Notification) -> dict[str, str]:
    """Action -> token for the notification's recipient; {} when it offers nothing (or not to them)."""
    event = s.get(EventRow, notification.event_id)
    found = offer(s, event) if event is not None else None
    if found is None or not found.for_person(names(s.get(Person, notification.person_id), notification.person_id)):
        return {}
    return found.tokens(notification.id, notification.person_id, notification.created_at)
