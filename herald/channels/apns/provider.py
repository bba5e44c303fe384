"""APNs: the HTTP/2 provider API with token authentication.

https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns

- One ES256 provider token per process (team id, key id, .p8 key), reused for every request and
  refreshed every ``HERALD_APNS_JWT_REFRESH_S`` (Apple: not more often than every 20 minutes,
  not less than every 60); a 403 ExpiredProviderToken regenerates it once; after
  TooManyProviderTokenUpdates herald stops regenerating for 20 minutes.
- Persistent HTTP/2 connections per host (sandbox and production differ) through
  :mod:`herald.channels.h2client`, which resends streams a GOAWAY left unprocessed.
- The hosts are settings, so the local fake (or a proxy) can stand in.
- A page (severity critical or error) is heard: ``aps.sound`` "default", ``interruption-level``
  "time-sensitive" (shown at once, through a Focus that allows time-sensitive notifications) and
  apns-priority 10. ``interruption-level`` "critical" with the critical-alert sound dictionary
  (it plays through the mute switch and Do Not Disturb) only for severity critical, and only when
  ``HERALD_APNS_CRITICAL_ALERTS`` says the app holds Apple's Critical Alerts entitlement (without it
  iOS would not play it as critical). The keys:
  https://developer.apple.com/documentation/usernotifications/generating-a-remote-notification
  (Table 1: ``sound``, ``interruption-level``; the sound dictionary ``critical``, ``name``, ``volume``),
  https://developer.apple.com/documentation/usernotifications/unnotificationinterruptionlevel
  (critical "requires an approved entitlement"). Every other notification: no sound, level active.
- Every notification carries ``apns-collapse-id`` (herald/payload.py ``collapse_key``): a resend
  replaces the first copy on the phone rather than showing a second.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import jwt

from herald.channels.apns import ERRORS, ApnsSettings, apns_topic
from herald.channels.h2client import ConnectionPool, NotProcessed, Response, Uncertain
from herald.channels.sender import (
    ProviderChannel,
    Rule,
    apply_rule,
    connection_failed,
    provider_text,
    retry_after,
    with_latency,
)
from herald.channels.types import Message, Result
from herald.payload import PayloadTooLarge, fit
from herald.settings import get_settings

FREEZE_AFTER_TOO_MANY_UPDATES_S = 20 * 60
MIN_FORCED_REFRESH_S = 1.0  # never regenerate twice within a second, however many 403s arrive

PRIORITY = {"info": "5", "warning": "5", "error": "10", "critical": "10"}
PAGES = ("critical", "error")  # the severities that page a person: heard, through Focus where allowed
CRITICAL_SOUND = {"critical": 1, "name": "default", "volume": 1.0}


def classify(status: int, reason: str | None) -> tuple[str, Rule]:
    if reason in ERRORS:
        return reason, ERRORS[reason]
    key = "5xx" if status >= 500 else "4xx"
    return key, ERRORS[key]


def sound(severity: str, *, critical_alerts: bool = False) -> dict[str, object]:
    """The aps keys that make a page heard: none for a notification that is not a page."""
    if severity not in PAGES:
        return {}
    if severity == "critical" and critical_alerts:
        return {"sound": dict(CRITICAL_SOUND), "interruption-level": "critical"}
    return {"sound": "default", "interruption-level": "time-sensitive"}


def encode(message: Message, *, critical_alerts: bool = False) -> bytes:
    payload = message.payload
    loud = sound(message.severity, critical_alerts=critical_alerts)

    def build(title: str, body: str) -> bytes:
        aps: dict[str, object] = {"alert": {"title": title, "body": body}}
        if message.thread_key:
            aps["thread-id"] = message.thread_key[:64]
        aps.update(loud)
        extra: dict[str, object] = {}
        if payload.actions:
            # The app registers a UNNotificationCategory per category with these actions; the tapped
            # action's token goes to POST /v1/actions (docs/actions.md).
            aps["category"] = payload.category
            extra["tokens"] = payload.actions
        return json.dumps({"aps": aps, "link": payload.link, **payload.data, **extra}, separators=(",", ":"),
                          ensure_ascii=False).encode()

    return fit(build, payload.title, payload.body)


def collapse_id(key: str) -> str:
    # apns-collapse-id: at most 64 bytes; a long dedup key is hashed rather than cut (no clashes).
    return key if len(key.encode()) <= 64 else hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ProviderToken:
    """The ES256 provider token of one signing key, shared by every request of the process."""

    key: str
    key_id: str
    team_id: str
    refresh_s: float
    value: str = ""
    issued_at: float = 0.0
    frozen_until: float = 0.0
    generated: int = 0

    def current(self) -> str:
        now = time.time()
        if not self.value or (now - self.issued_at >= self.refresh_s and now >= self.frozen_until):
            self._generate(now)
        return self.value

    def expired(self, used: str) -> None:
        """APNs said ExpiredProviderToken for ``used``: regenerate, unless another request just did."""
        now = time.time()
        if used == self.value and now >= self.frozen_until and now - self.issued_at >= MIN_FORCED_REFRESH_S:
            self._generate(now)

    def freeze(self) -> None:
        self.frozen_until = time.time() + FREEZE_AFTER_TOO_MANY_UPDATES_S

    def _generate(self, now: float) -> None:
        self.value = jwt.encode({"iss": self.team_id, "iat": int(now)}, self.key, algorithm="ES256",
                                headers={"kid": self.key_id})
        self.issued_at = now
        self.generated += 1


class ApnsChannel(ProviderChannel):
    name = "apns"

    def __init__(self) -> None:
        super().__init__()
        settings = ApnsSettings.current()
        if settings.key_file is None or not settings.key_id or not settings.team_id:
            raise ValueError("APNs needs HERALD_APNS_KEY_FILE, HERALD_APNS_KEY_ID and HERALD_APNS_TEAM_ID")
        self.token = ProviderToken(Path(settings.key_file).read_text(), settings.key_id,
                                   settings.team_id, settings.jwt_refresh_s)
        self.urls = {"production": settings.production_url, "sandbox": settings.sandbox_url}
        self.topics = settings.topics
        self.critical_alerts = settings.critical_alerts
        self.ca_file = settings.ca_file
        self.size = settings.connections
        self.timeout_s = get_settings().channel_timeout_s
        self.pools: dict[str, ConnectionPool] = {}

    async def open(self) -> None:
        if self.pools:
            return
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.set_alpn_protocols(["h2"])
        for environment, url in self.urls.items():
            parts = urlsplit(url)
            self.pools[environment] = ConnectionPool(parts.hostname or "", parts.port or 443, context, self.size,
                                           self.timeout_s)

    async def aclose(self) -> None:
        for pool in self.pools.values():
            await pool.close()
        self.pools = {}

    def host(self, message: Message) -> str:
        # Sandbox and production are two hosts, two circuits: one can be down while the other answers.
        return urlsplit(self.urls["sandbox" if message.target.environment == "sandbox" else "production"]).netloc

    async def post(self, environment: str, message: Message, body: bytes, topic: str) -> tuple[Response, str]:
        pool = self.pools["sandbox" if environment == "sandbox" else "production"]
        token = self.token.current()
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", pool.host),
                   (":path", f"/3/device/{message.target.token}"),
                   ("authorization", f"bearer {token}"),
                   ("apns-topic", topic),
                   ("apns-push-type", "alert"),
                   ("apns-priority", PRIORITY.get(message.severity, "5")),
                   ("apns-expiration", str(int(time.time()) + message.ttl_s))]
        if message.collapse_key:
            headers.append(("apns-collapse-id", collapse_id(message.collapse_key)))
        return await pool.request(headers, body), token

    @staticmethod
    def reason(response: Response) -> tuple[str | None, int | None]:
        try:
            answer = json.loads(response.body or b"{}")
        except ValueError:
            return None, None
        if not isinstance(answer, dict):
            return None, None
        reason, stamp = answer.get("reason"), answer.get("timestamp")
        return (provider_text(reason, 64) if isinstance(reason, str) else None,
                stamp if isinstance(stamp, int) else None)

    async def send_one(self, message: Message) -> tuple[Result, Rule | None]:
        target = message.target
        did = target.delivery_id
        started = time.perf_counter()
        try:
            body = encode(message, critical_alerts=self.critical_alerts)
        except PayloadTooLarge as exc:
            return Result(did, "permanent", None, str(exc)), None
        topic = apns_topic(target.app, self.topics)
        if topic is None:
            # Registered before herald required a known topic: every send would be DeviceTokenNotForTopic.
            return Result(did, "permanent", None, f"no apns-topic for app {provider_text(target.app, 128)!r}: "
                          "map it in HERALD_APNS_TOPICS or register the device with its bundle id"), None
        environment = target.environment
        try:
            response, used = await self.post(environment, message, body, topic)
            reason, stamp = self.reason(response)
            if response.status == 403 and reason == "ExpiredProviderToken":
                self.token.expired(used)
                response, used = await self.post(environment, message, body, topic)
                reason, stamp = self.reason(response)
            if response.status == 400 and reason == "BadDeviceToken":
                # A sandbox token sent to production (or the reverse) is BadDeviceToken too:
                # try the other host before deactivating anything.
                other = "production" if environment == "sandbox" else "sandbox"
                second, _ = await self.post(other, message, body, topic)
                if second.status == 200:
                    return with_latency(Result(did, "sent", "200", f"token is {other}: device corrected",
                                               environment=other), started), None
        except Uncertain as exc:  # sent, no answer: APNs may have delivered it
            return connection_failed(did, exc, started, sent=True), None
        except (NotProcessed, OSError, TimeoutError, ssl.SSLError) as exc:  # never reached APNs
            return connection_failed(did, exc, started), None
        if response.status == 200:
            return with_latency(Result(did, "sent", "200", None), started), None
        key, rule = classify(response.status, reason)
        if key in ("Unregistered", "ExpiredToken") and isinstance(stamp, int | float) \
                and target.device_registered_at is not None and target.device_registered_at.timestamp() * 1000 > stamp:
            key, rule = "Unregistered:reregistered", ERRORS["Unregistered:reregistered"]
        if key == "TooManyProviderTokenUpdates":
            self.token.freeze()
        if rule.fresh_connection:
            self.pools["sandbox" if environment == "sandbox" else "production"].retire()
        result = apply_rule(rule, did, f"{response.status} {reason or ''}".strip(), key, 0,
                            retry_after(response.headers.get("retry-after")))
        return with_latency(replace(result), started), rule
