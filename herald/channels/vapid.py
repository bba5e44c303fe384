"""VAPID (RFC 8292) keys and tokens, and Web Push encryption (RFC 8291, aes128gcm).

The libraries do the cryptography: py_vapid loads and generates the key and signs the token,
pywebpush's ``WebPusher`` checks the subscription and encrypts the body (a fresh sender key and
salt per message). What stays here is the cache: one signed VAPID header per push-service origin,
reused until near its expiry (signing is a third of the per-message CPU otherwise; pywebpush's own
``webpush()`` signs again on every call).

Shared by the Web Push channel, ``herald vapid generate``, the API (the public key) and the fakes.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException
from pywebpush import WebPusher, WebPushException

TOKEN_LIFETIME_S = 12 * 3600  # RFC 8292 section 2: at most 24 hours
TOKEN_MARGIN_S = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: Vapid02 | ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed P-256 point (65 bytes): the form browsers and RFC 8291 use."""
    if isinstance(key, Vapid02):
        key = key.public_key
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def generate(path: Path) -> str:
    """Write a new VAPID private key (PEM, mode 600) and return the public key for the browser."""
    key = Vapid02()
    key.generate_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # py_vapid's save_key leaves it 644
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_pem())
    return b64url(public_bytes(key))


def load(path: Path) -> Vapid02:
    """The VAPID key in ``path`` (PEM or DER). A missing file is an error: py_vapid's ``from_file`` would
    silently write a new key there, and every browser subscription is bound to the old one."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no VAPID key (create one: herald vapid generate)")
    try:
        key = Vapid02.from_file(str(path))
    except VapidException as exc:
        raise ValueError(f"{path}: not a VAPID (P-256) private key: {exc}") from exc
    if not isinstance(key.private_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


class Vapid:
    """Signs one VAPID token per push-service origin (py_vapid) and reuses it until near its expiry."""

    def __init__(self, key: Vapid02, subject: str) -> None:
        if not subject.startswith(("mailto:", "https:")):
            raise ValueError(f"VAPID subject must be a mailto: or https: URL, not {subject!r} (RFC 8292)")
        self.key = key
        self.subject = subject
        self.public = b64url(public_bytes(key))
        self._cache: dict[str, tuple[str, float]] = {}
        try:  # py_vapid checks the subject's form too: refuse now, not at the first send
            key.sign({"aud": "https://push.example.com", "sub": subject})
        except VapidException as exc:
            raise ValueError(f"VAPID subject {subject!r} refused: {exc}") from exc

    def header(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        cached = self._cache.get(audience)
        now = time.time()
        if cached is None or cached[1] - TOKEN_MARGIN_S < now:
            exp = int(now) + TOKEN_LIFETIME_S
            signed = self.key.sign({"aud": audience, "exp": exp, "sub": self.subject})["Authorization"]
            cached = self._cache[audience] = (signed, exp)
        return cached[0]


class BadSubscription(ValueError):
    """pywebpush refused the subscription (no endpoint, a key missing or malformed)."""


def encrypt(plaintext: bytes, subscription: Mapping[str, Any]) -> bytes:
    """The aes128gcm body for one subscription (pywebpush: a fresh sender key and salt per message)."""
    try:
        return bytes(WebPusher(subscription).encode(plaintext, content_encoding="aes128gcm")["body"])
    except WebPushException as exc:
        raise BadSubscription(exc.message if hasattr(exc, "message") else str(exc)) from exc
