"""A fake Web Push service (RFC 8030) that checks VAPID (RFC 8292) and decrypts (RFC 8291).

Each subscription it hands out has its own P-256 key pair and auth secret, like a browser's;
a message is decrypted with them, so a test reads the clear text the service worker would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.fakes.state import Provider

MAX_BODY_BYTES = 4096


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeWebPush:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.base_url = ""
        self.subscriptions: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes, str | None]] = {}
        self._verified: dict[str, dict[str, Any]] = {}  # token -> claims: verify each token once

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/push/{sub}", self.push)
        return app

    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A new subscription, as ``PushManager.subscribe()`` returns it in a browser."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        sub_id = secrets.token_urlsafe(12)
        self.subscriptions[sub_id] = (key, auth, application_server_key)
        public = key.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": f"{self.base_url}/push/{sub_id}", "keys": {"p256dh": b64url(public),
                                                                       "auth": b64url(auth)}}

    def endpoint_token(self, subscription: dict[str, Any]) -> str:
        """The key the switches use for a subscription (its id)."""
        return str(subscription["endpoint"]).rsplit("/", 1)[-1]

    async def push(self, request: web.Request) -> web.Response:
        p = self.provider
        p.enter()
        try:
            if p.switches.latency_ms:
                await asyncio.sleep(p.switches.latency_ms / 1000)
            if p.switches.hang_s.get("webpush"):
                await request.read()  # the whole request is in: what happens next is the provider's
                await asyncio.sleep(p.switches.hang_s["webpush"])  # accepted, answered late
            status, reason, text = await self._answer(request)
            p.record(token=request.match_info["sub"], status=status, reason=reason, text=text,
                     ttl=request.headers.get("TTL"), urgency=request.headers.get("Urgency"),
                     topic=request.headers.get("Topic"))
            headers = {}
            if status == 429:
                headers["Retry-After"] = str(int(p.switches.retry_after_s))
            if status == 201:
                headers["Location"] = f"{self.base_url}/message/{secrets.token_urlsafe(8)}"
            return web.Response(status=status, text=reason or "", headers=headers)
        finally:
            p.leave()

    def _vapid(self, request: web.Request, expected_key: str | None) -> tuple[int, str] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("vapid "):
            return 401, "missing VAPID authorization"
        params = dict(part.strip().split("=", 1) for part in header[6:].split(",") if "=" in part)
        token, key = params.get("t", ""), params.get("k", "")
        if expected_key is not None and key != expected_key:
            return 403, "VAPID key differs from the subscription's applicationServerKey"
        claims = self._verified.get(token)
        if claims is None:
            try:
                public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
                claims = jwt.decode(token, public, algorithms=["ES256"], options={"verify_aud": False,
                                                                                  "require": ["aud", "exp"]})
            except (jwt.PyJWTError, ValueError) as exc:
                return 401, f"invalid VAPID token: {exc}"
            self._verified[token] = claims
        origin = f"{urlsplit(self.base_url).scheme}://{urlsplit(self.base_url).netloc}"
        if claims.get("aud") != origin:
            return 401, f"VAPID aud {claims.get('aud')!r} is not {origin!r}"
        if claims["exp"] > time.time() + 24 * 3600 or claims["exp"] < time.time():
            return 401, "VAPID exp more than 24 hours ahead or past"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return 401, "VAPID sub must be a mailto: or https: URL"
        return None

    async def _answer(self, request: web.Request) -> tuple[int, str | None, str | None]:
        p = self.provider
        sub_id = request.match_info["sub"]
        known = self.subscriptions.get(sub_id)
        body = await request.read()
        if sub_id in p.switches.dead_tokens:
            return 410, "push subscription has unsubscribed or expired", None
        if known is None:
            return 404, "no such subscription", None
        trouble = p.trouble()
        if trouble == "throttle":
            return 429, "too many requests", None
        if trouble is not None:
            return 503, "service unavailable", None
        forced = p.forced(sub_id)
        if forced is not None:
            return int(forced), f"forced {forced}", None
        if "TTL" not in request.headers:  # RFC 8030 section 5.2
            return 400, "TTL header required", None
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return 415, "Content-Encoding must be aes128gcm", None
        if len(body) > MAX_BODY_BYTES:
            return 413, "payload too large", None
        refused = self._vapid(request, known[2])
        if refused is not None:
            return refused[0], refused[1], None
        try:
            text = http_ece.decrypt(body, private_key=known[0], auth_secret=known[1], version="aes128gcm")
        except Exception as exc:  # noqa: BLE001 - any decryption failure is the sender's fault
            return 400, f"cannot decrypt: {exc}", None
        return 201, None, text.decode("utf-8", errors="replace")
