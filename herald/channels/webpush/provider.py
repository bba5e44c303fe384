"""Web Push: RFC 8030 delivery, RFC 8291 aes128gcm encryption, RFC 8292 VAPID.

The device row holds the browser's subscription JSON (endpoint, keys.p256dh, keys.auth).
pywebpush's ``WebPusher`` checks the subscription and encrypts the body per message (a fresh
sender key and salt); py_vapid holds the VAPID key and signs, once per push-service origin, a token
reused until near its expiry (herald/channels/vapid.py: signing is a third of the per-message CPU
otherwise). It is posted through one aiohttp session per process, the transport measured cheapest
here, rather than pywebpush's own ``webpush()``, which signs VAPID again on every call.

- TTL is always set (RFC 8030 section 5.2): pywebpush's default of 0 drops a message for a
  device that is offline at that instant.
- Urgency from severity (section 5.3: a page is ``high``, delivered even to a device saving
  battery), Topic from the collapse key (section 5.4: a newer message with the same topic replaces
  an undelivered older one; at most 32 URL-safe base64 characters), on every notification.
- A page's clear text asks the service worker for ``requireInteraction: true`` (the Notifications
  API option: the notification stays on screen until the person acts on it or dismisses it).
- The endpoint is a URL someone else chose: before each POST it is checked again as at
  registration (herald/devices.py: https, no loopback, private or link-local address), and every
  address its host name resolves to is checked by the connector's resolver, the very addresses
  it then connects to. Redirects are not followed; what the service answered is stored cut short.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from herald import devices
from herald.actions import TITLES
from herald.channels import vapid
from herald.channels.http import HttpChannel, may_have_left, read_capped
from herald.channels.sender import Rule, apply_rule, connection_failed, provider_text, retry_after, with_latency
from herald.channels.types import Message, Result
from herald.channels.webpush import ERRORS, WebPushSettings
from herald.errors import InvalidDevice
from herald.payload import PayloadTooLarge, fit

# RFC 8291 section 4: 4096 bytes of body minus 86 of header and 17 of tag and delimiter.
MAX_CLEARTEXT_BYTES = 3993

URGENCY = {"info": "normal", "warning": "normal", "error": "high", "critical": "high"}
PAGES = ("critical", "error")


def classify(status: int) -> tuple[str, Rule]:
    key = str(status) if str(status) in ERRORS else ("5xx" if status >= 500 else "3xx" if status < 400 else "4xx")
    return key, ERRORS[key]


def topic(dedup_key: str) -> str:
    # A Topic is at most 32 characters of the URL-safe base64 alphabet: hash the dedup key.
    return vapid.b64url(hashlib.sha256(dedup_key.encode()).digest())[:32]


def cleartext(message: Message) -> bytes:
    """What the service worker receives: JSON with title, body, link and ids, within the limit; with
    the responder page's https ``url``, and the ``actions`` for showNotification() with their
    ``tokens`` when the notification can be answered (docs/actions.md)."""
    payload = message.payload
    extra: dict[str, object] = {}
    if message.severity in PAGES:
        extra["requireInteraction"] = True  # showNotification(title, {requireInteraction}): stays until acted on
    if payload.url:
        extra["url"] = payload.url
    if payload.actions:
        extra["category"] = payload.category
        extra["actions"] = [{"action": action, "title": TITLES.get(action, action)} for action in payload.actions]
        extra["tokens"] = payload.actions

    def encode(title: str, body: str) -> bytes:
        return json.dumps({"title": title, "body": body, "link": payload.link, "data": payload.data, **extra},
                          separators=(",", ":"), ensure_ascii=False).encode()

    return fit(encode, payload.title, payload.body, MAX_CLEARTEXT_BYTES)


def subscription(token: str) -> dict[str, Any]:
    info = json.loads(token)
    if not isinstance(info, dict) or not isinstance(info.get("endpoint"), str):
        raise ValueError("not a Web Push subscription (endpoint, keys.p256dh, keys.auth)")
    return info


class PublicResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, and refuses a host with any non-public address.

    The connector connects to exactly the addresses returned here, so a name that resolves to an
    internal address is refused on every lookup, not just once at registration (DNS rebinding).
    """

    def __init__(self, allow_loopback: bool) -> None:
        self.inner = aiohttp.DefaultResolver()
        self.allow_loopback = allow_loopback

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        for answer in answers:
            devices.check_address(answer["host"], allow_loopback=self.allow_loopback)
        return answers

    async def close(self) -> None:
        await self.inner.close()


class WebPushChannel(HttpChannel):
    name = "webpush"

    def __init__(self) -> None:
        settings = WebPushSettings.current()
        if settings.vapid_key_file is None:
            raise ValueError("HERALD_WEBPUSH_VAPID_KEY_FILE is not set (create one: herald vapid generate)")
        super().__init__(settings.max_in_flight)
        self.vapid = vapid.Vapid(vapid.load(settings.vapid_key_file), settings.vapid_subject)
        self.allow_loopback = settings.allow_loopback

    def connector_options(self) -> dict[str, Any]:
        return {"resolver": PublicResolver(self.allow_loopback)}

    def host(self, message: Message) -> str:
        # One circuit per push service: FCM's, Mozilla's and Apple's web push are different hosts.
        try:
            return urlsplit(json.loads(message.target.token)["endpoint"]).netloc or "?"
        except (ValueError, KeyError, TypeError, AttributeError):
            return "?"

    async def send_one(self, message: Message) -> tuple[Result, Rule | None]:
        assert self.session is not None
        did = message.target.delivery_id
        started = time.perf_counter()
        try:
            sub = subscription(message.target.token)
            devices.check_endpoint(sub["endpoint"], allow_loopback=self.allow_loopback)
            body = vapid.encrypt(cleartext(message), sub)  # pywebpush checks the keys and encrypts
        except PayloadTooLarge as exc:
            return Result(did, "permanent", None, str(exc)), None
        except InvalidDevice as exc:  # stored before herald checked endpoints, or the setting changed
            return apply_rule(ERRORS["endpoint"], did, "refused", str(exc), 0, None), ERRORS["endpoint"]
        except (ValueError, KeyError, TypeError) as exc:
            # A subscription that cannot even be parsed or used as a key can never work.
            return Result(did, "invalid_token", None, f"unusable subscription: {provider_text(str(exc))}"), None
        headers = {"TTL": str(max(1, message.ttl_s)), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream",
                   "Urgency": URGENCY.get(message.severity, "normal"),
                   "Authorization": self.vapid.header(sub["endpoint"])}
        if message.collapse_key:
            headers["Topic"] = topic(message.collapse_key)
        try:
            async with self.session.post(sub["endpoint"], data=body, headers=headers,
                                         allow_redirects=False) as response:
                status = response.status
                text = await read_capped(response)
                wait = retry_after(response.headers.get("Retry-After"))
        except InvalidDevice as exc:  # the resolver refused the addresses the host name has now
            return with_latency(apply_rule(ERRORS["resolved"], did, "refused", str(exc), 0, None), started), \
                ERRORS["resolved"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return connection_failed(did, exc, started, sent=may_have_left(exc)), None
        if status in (200, 201, 202):
            return with_latency(Result(did, "sent", str(status), None), started), None
        key, rule = classify(status)
        return with_latency(apply_rule(rule, did, str(status), f"{status}: {provider_text(text)}", 0, wait),
                            started), rule
