"""VAPID (RFC 8292) keys and tokens, and Web Push encryption (RFC 8291, aes128gcm).

Shared by the Web Push channel, ``herald vapid generate`` and the local fake.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

TOKEN_LIFETIME_S = 12 * 3600  # RFC 8292 section 2: at most 24 hours
TOKEN_MARGIN_S = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed P-256 point (65 bytes): the form browsers and RFC 8291 use."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def generate(path: Path) -> str:
    """Write a new VAPID private key (PEM, mode 600) and return the public key for the browser."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return b64url(public_bytes(key))


def load(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


class Vapid:
    """Signs one VAPID token per push-service origin and reuses it until near its expiry."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        if not subject.startswith(("mailto:", "https:")):
            raise ValueError(f"VAPID subject must be a mailto: or https: URL, not {subject!r} (RFC 8292)")
        self.key = key
        self.subject = subject
        self.public = b64url(public_bytes(key))
        self._cache: dict[str, tuple[str, float]] = {}

    def header(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        cached = self._cache.get(audience)
        now = time.time()
        if cached is None or cached[1] - TOKEN_MARGIN_S < now:
            exp = int(now) + TOKEN_LIFETIME_S
            token = jwt.encode({"aud": audience, "exp": exp, "sub": self.subject}, self.key, algorithm="ES256",
                               headers={"typ": "JWT"})
            cached = self._cache[audience] = (token, exp)
        return f"vapid t={cached[0]}, k={self.public}"


def encrypt(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    """aes128gcm body for one subscription: a fresh sender key and salt per message (RFC 8291)."""
    sender = ec.generate_private_key(ec.SECP256R1())
    return http_ece.encrypt(plaintext, salt=os.urandom(16), private_key=sender, dh=unb64url(p256dh),
                            auth_secret=unb64url(auth), version="aes128gcm")

