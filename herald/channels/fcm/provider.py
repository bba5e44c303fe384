"""FCM HTTP v1: https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send

Transport, by measurement (docs/channels.md, "Why these clients"): firebase-admin's ``send_each_async``
(httpx over HTTP/2) costs about 5 ms of CPU per message here, aiohttp about 0.4 ms for the same
request, so herald posts the v1 JSON itself through one aiohttp session per process, with
persistent keep-alive connections. ``validate_only`` is sent explicitly false (firebase-admin's
``dry_run``). The OAuth access token comes from the service-account file exactly as Google's
libraries get it: an RS256-signed JWT assertion exchanged at the file's ``token_uri``
(RFC 7523, https://developers.google.com/identity/protocols/oauth2/service-account#httprest),
cached until shortly before it expires. One file per app (``HERALD_FCM_APP_CREDENTIALS``), or one
for all (``HERALD_FCM_CREDENTIALS_FILE``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from herald.channels.fcm import ERRORS, FcmSettings
from herald.channels.http import HttpChannel, may_have_left, read_capped
from herald.channels.sender import Rule, apply_rule, connection_failed, provider_text, retry_after, with_latency
from herald.channels.types import Message, Result
from herald.payload import PayloadTooLarge, fit

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TOKEN_MARGIN_S = 300  # refresh an access token five minutes before it expires

# Field violations that name the target mean the token itself is malformed.
TOKEN_FIELDS = ("message.token", "message.fid")

# Android priority and collapse key from severity and dedup key:
# https://firebase.google.com/docs/cloud-messaging/android/message-priority
PRIORITY = {"info": "NORMAL", "warning": "NORMAL", "error": "HIGH", "critical": "HIGH"}


def classify(status: int, body: dict[str, Any]) -> tuple[str, Rule]:
    """(key, rule) for an FCM error answer."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    details = error.get("details") or []
    code = next((d.get("errorCode") for d in details
                 if isinstance(d, dict) and str(d.get("@type", "")).endswith("FcmError")), None)
    code = code or error.get("status")
    if code == "INVALID_ARGUMENT":
        fields = [v.get("field") for d in details if isinstance(d, dict)
                  for v in d.get("fieldViolations") or [] if isinstance(v, dict)]
        if any(f in TOKEN_FIELDS for f in fields):
            return "INVALID_ARGUMENT:token", ERRORS["INVALID_ARGUMENT:token"]
    if code in ERRORS:
        return code, ERRORS[code]
    key = str(status) if str(status) in ERRORS else ("5xx" if status >= 500 else "4xx")
    return key, ERRORS[key]


def build(message: Message, title: str, body: str, *, validate_only: bool = False) -> dict[str, Any]:
    """The v1 request body for one message."""
    target = message.target
    # firebase-admin 7.7 deprecates Message.token for Message.fid: the device row says which it holds.
    address = {"fid" if target.token_kind == "fid" else "token": target.token}
    data = {**message.payload.data, "link": message.payload.link}
    if message.payload.actions:
        # Data values are strings only: the actions as a list, then one key per action's token (docs/actions.md).
        data["category"] = message.payload.category or ""
        data["actions"] = ",".join(message.payload.actions)
        data.update({f"action_{action}": token for action, token in message.payload.actions.items()})
    android: dict[str, Any] = {"priority": PRIORITY.get(message.severity, "NORMAL"),
                               "ttl": f"{message.ttl_s}s"}
    if message.collapse_key:
        android["collapse_key"] = message.collapse_key[:100]
    return {"validate_only": validate_only,
            "message": {**address, "notification": {"title": title, "body": body}, "data": data,
                        "android": android}}


def encode(message: Message) -> bytes:
    """The request body within FCM's 4 KB (body and title trimmed first)."""
    return fit(lambda title, body: json.dumps(build(message, title, body), separators=(",", ":"),
                                          ensure_ascii=False).encode(),
               message.payload.title, message.payload.body)


@dataclass
class Credentials:
    """One service account: its project and a cached OAuth access token."""

    project_id: str
    client_email: str
    private_key: str
    token_uri: str
    access_token: str = ""
    expires_at: float = 0.0

    @classmethod
    def load(cls, path: Path) -> Credentials:
        info = json.loads(Path(path).read_text())
        return cls(info["project_id"], info["client_email"], info["private_key"], info["token_uri"])

    def assertion(self) -> str:
        now = int(time.time())
        return jwt.encode({"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri, "iat": now,
                           "exp": now + 3600}, self.private_key, algorithm="RS256")


class FcmChannel(HttpChannel):
    name = "fcm"

    def __init__(self) -> None:
        settings = FcmSettings.current()
        super().__init__(settings.max_in_flight)
        self.url = settings.url.rstrip("/")
        self.files = {app: Path(p) for app, p in settings.app_credentials.items()}
        self.default_file = settings.credentials_file
        self.credentials: dict[str, Credentials] = {}
        self._token_lock: asyncio.Lock | None = None

    async def open(self) -> None:
        if self.session is None or self.session.closed:
            await super().open()
            self._token_lock = asyncio.Lock()  # bound to the loop the session lives on

    def _credentials(self, app: str) -> Credentials:
        if app not in self.credentials:
            path = self.files.get(app) or self.default_file
            if path is None:
                raise FileNotFoundError(f"no FCM service account for app {app!r}: set HERALD_FCM_CREDENTIALS_FILE "
                                        "or HERALD_FCM_APP_CREDENTIALS")
            self.credentials[app] = Credentials.load(path)
        return self.credentials[app]

    async def access_token(self, creds: Credentials, *, force: bool = False) -> str:
        assert self.session is not None and self._token_lock is not None
        async with self._token_lock:  # one token request however many sends wait for it
            if force or time.time() > creds.expires_at - TOKEN_MARGIN_S:
                form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": creds.assertion()}
                async with self.session.post(creds.token_uri, data=form, allow_redirects=False) as response:
                    text = await read_capped(response)
                    if response.status != 200:
                        raise PermissionError(f"OAuth token refused ({response.status}): {provider_text(text)}")
                    answer = json.loads(text)
                creds.access_token = answer["access_token"]
                creds.expires_at = time.time() + float(answer.get("expires_in", 3600))
            return creds.access_token

    async def send_one(self, message: Message) -> tuple[Result, Rule | None]:
        assert self.session is not None
        did = message.target.delivery_id
        started = time.perf_counter()
        try:
            body = encode(message)
        except PayloadTooLarge as exc:
            return Result(did, "permanent", None, str(exc)), None
        try:
            creds = self._credentials(message.target.app)
            token = await self.access_token(creds)
        except (FileNotFoundError, PermissionError, KeyError, ValueError) as exc:
            return Result(did, "auth", None, provider_text(f"FCM credentials: {exc}", 500)), None
        except (aiohttp.ClientError, TimeoutError) as exc:  # no access token: the message never left
            return connection_failed(did, exc, started), None
        url = f"{self.url}/v1/projects/{creds.project_id}/messages:send"
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            try:
                async with self.session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                    status = response.status
                    text = await read_capped(response)
                    wait = retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                return connection_failed(did, exc, started, sent=may_have_left(exc)), None
            if status == 200:
                return with_latency(Result(did, "sent", "200", None), started), None
            try:
                answer = json.loads(text)
            except ValueError:
                answer = {}
            key, rule = classify(status, answer)
            if status == 401 and attempt == 1:
                # An access token can be revoked before its expiry: fetch a new one, once.
                try:
                    token = await self.access_token(creds, force=True)
                except (aiohttp.ClientError, TimeoutError) as exc:  # FCM refused the first copy
                    return connection_failed(did, exc, started), None
                continue
            message_text = (answer.get("error") or {}).get("message", "") if isinstance(answer, dict) else ""
            return with_latency(apply_rule(rule, did, f"{status} {key}", f"{key}: {message_text}", 0, wait),
                                started), rule
        raise AssertionError("unreachable")
