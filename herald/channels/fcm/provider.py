"""FCM HTTP v1: https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send

Transport, by measurement (docs/channels.md, "The libraries"): herald posts the v1 JSON itself
through one aiohttp session per process, with persistent keep-alive connections, rather than
through firebase-admin's ``send_each_async``. ``validate_only`` is sent explicitly false
(firebase-admin's ``dry_run``).

Credentials come from firebase-admin (``firebase_admin.credentials``, google-auth underneath):
a service-account file (``Certificate``: one per app in ``HERALD_FCM_APP_CREDENTIALS``, or one for
all in ``HERALD_FCM_CREDENTIALS_FILE``), or with no file Application Default Credentials
(``ApplicationDefault``: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's file, workload identity, the
metadata server), so nothing herald-specific is needed on Google Cloud. Only the OAuth access token
comes from the library (``get_access_token()``, a blocking call: run in a thread). It is cached, and
refreshed in the background when it is within ``TOKEN_MARGIN_S`` of its expiry, so a send waits for
a token only on the first use or after the token lapsed or was refused.

A page (severity critical or error) is heard on Android: priority HIGH (delivered at once, waking
the device), and its notification posted in the Android notification channel
``HERALD_FCM_PAGE_CHANNEL`` (the app creates it with high importance: docs/actions.md), with the
default sound and notification_priority MAX (critical) or HIGH (error) for Android before 8.0
(https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages#androidnotification,
https://firebase.google.com/docs/cloud-messaging/android/message-priority). Every notification
carries a collapse key and the same ``android.notification.tag``: a resend replaces the first copy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from firebase_admin import credentials as firebase_credentials
from google.auth import exceptions as google_exceptions

from herald.channels.fcm import ERRORS, PAGE_CHANNEL, FcmSettings
from herald.channels.http import HttpChannel, may_have_left, read_capped
from herald.channels.sender import Rule, apply_rule, connection_failed, provider_text, retry_after, with_latency
from herald.channels.types import Message, Result
from herald.payload import PayloadTooLarge, fit

TOKEN_MARGIN_S = 300  # refresh an access token (in the background) five minutes before it expires
LOAD_RETRY_S = 60.0  # credentials that could not be found are looked for again after this long

# Field violations that name the target mean the token itself is malformed.
TOKEN_FIELDS = ("message.token", "message.fid")

# Android priority and collapse key from severity and dedup key:
# https://firebase.google.com/docs/cloud-messaging/android/message-priority
PRIORITY = {"info": "NORMAL", "warning": "NORMAL", "error": "HIGH", "critical": "HIGH"}
# A page's notification: Android before 8.0 reads notification_priority; 8.0 and later the channel's importance.
NOTIFICATION_PRIORITY = {"critical": "PRIORITY_MAX", "error": "PRIORITY_HIGH"}


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


def build(message: Message, title: str, body: str, *, validate_only: bool = False,
          page_channel: str = PAGE_CHANNEL) -> dict[str, Any]:
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
    notification: dict[str, Any] = {}
    if message.collapse_key:
        # collapse_key: FCM keeps only the newest undelivered copy; tag: the shown one is replaced.
        android["collapse_key"] = notification["tag"] = message.collapse_key[:100]
    if message.severity in NOTIFICATION_PRIORITY:
        notification.update(channel_id=page_channel, sound="default",
                            notification_priority=NOTIFICATION_PRIORITY[message.severity])
    if notification:
        android["notification"] = notification
    return {"validate_only": validate_only,
            "message": {**address, "notification": {"title": title, "body": body}, "data": data,
                        "android": android}}


def encode(message: Message, *, page_channel: str = PAGE_CHANNEL) -> bytes:
    """The request body within FCM's 4 KB (body and title trimmed first)."""
    return fit(lambda title, body: json.dumps(build(message, title, body, page_channel=page_channel),
                                          separators=(",", ":"), ensure_ascii=False).encode(),
               message.payload.title, message.payload.body)


def _epoch(expiry: dt.datetime | None) -> float:
    """google-auth's expiry (a naive UTC datetime, or None when the token server gave none) as a timestamp."""
    if expiry is None:
        return time.time() + 3000.0
    return (expiry if expiry.tzinfo else expiry.replace(tzinfo=dt.UTC)).timestamp()


@dataclass
class Credential:
    """One app's firebase-admin credential, its project and the access token cached from it."""

    credential: firebase_credentials.Base
    project_id: str
    source: str  # the file, or "Application Default Credentials": for messages
    access_token: str = ""
    expires_at: float = 0.0
    refreshing: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path | None, project_id: str = "") -> Credential:
        """The credential of a service-account file, or Application Default Credentials when ``path`` is None.

        Blocking (ADC may ask the metadata server): call it off the event loop.
        """
        credential: firebase_credentials.Base
        if path is not None:
            credential = firebase_credentials.Certificate(str(path))
            source = str(path)
        else:
            credential = firebase_credentials.ApplicationDefault()
            source = "Application Default Credentials"
        project = project_id or getattr(credential, "project_id", None) or ""
        if not project:
            raise ValueError(f"no project id in {source}: set HERALD_FCM_PROJECT_ID (or GOOGLE_CLOUD_PROJECT)")
        return cls(credential, project, source)

    def refresh(self) -> str:
        """A new access token from the credential (blocking: one HTTP exchange with the token server)."""
        info = self.credential.get_access_token()
        self.access_token, self.expires_at = info.access_token, _epoch(info.expiry)
        return self.access_token


def token_failure(delivery_id: int, exc: Exception, started: float) -> Result:
    """No access token, so the message never left: the token server unreachable or failing is transient,
    credentials that are missing, unreadable or refused are ``auth`` (tokens kept, operator alerted)."""
    if isinstance(exc, google_exceptions.TransportError | aiohttp.ClientError | TimeoutError | ConnectionError) \
            or (isinstance(exc, google_exceptions.RefreshError) and getattr(exc, "retryable", False)):
        return connection_failed(delivery_id, exc, started)
    return Result(delivery_id, "auth", None, provider_text(f"FCM credentials: {exc}", 500))


class FcmChannel(HttpChannel):
    name = "fcm"

    def __init__(self) -> None:
        settings = FcmSettings.current()
        super().__init__(settings.max_in_flight)
        self.url = settings.url.rstrip("/")
        self.files = {app: Path(p) for app, p in settings.app_credentials.items()}
        self.default_file = settings.credentials_file
        self.project_id = settings.project_id
        self.page_channel = settings.page_channel
        self.credentials: dict[Path | None, Credential] = {}  # by file (None: ADC), shared by its apps
        self.unavailable: dict[Path | None, tuple[float, Exception]] = {}
        self._token_lock: asyncio.Lock | None = None

    async def open(self) -> None:
        if self.session is None or self.session.closed:
            await super().open()
            self._token_lock = asyncio.Lock()  # bound to the loop the session lives on

    async def aclose(self) -> None:
        for creds in self.credentials.values():
            if creds.refreshing is not None:
                creds.refreshing.cancel()
                creds.refreshing = None
        await super().aclose()

    async def credential(self, app: str) -> Credential:
        """The app's credential, loaded once (in a thread: ADC may ask the metadata server)."""
        path = self.files.get(app) or self.default_file
        if path in self.credentials:
            return self.credentials[path]
        assert self._token_lock is not None
        async with self._token_lock:
            if path not in self.credentials:
                failed = self.unavailable.get(path)
                if failed is not None and time.monotonic() - failed[0] < LOAD_RETRY_S:
                    raise failed[1]
                try:
                    self.credentials[path] = await asyncio.to_thread(Credential.load, path, self.project_id)
                except Exception as exc:
                    self.unavailable[path] = (time.monotonic(), exc)
                    raise
                self.unavailable.pop(path, None)
            return self.credentials[path]

    async def access_token(self, creds: Credential, *, force: bool = False) -> str:
        """The cached access token; fetched when there is none, it lapsed or FCM refused it (``force``).

        Within ``TOKEN_MARGIN_S`` of its expiry the token is still used while a background task fetches
        the next one: no send waits for a routine refresh.
        """
        assert self._token_lock is not None
        now = time.time()
        if not force and creds.access_token and now < creds.expires_at:
            if now > creds.expires_at - TOKEN_MARGIN_S and creds.refreshing is None:
                creds.refreshing = asyncio.create_task(self._refresh_later(creds))
            return creds.access_token
        used = creds.access_token
        async with self._token_lock:  # one token request however many sends wait for it
            if creds.access_token == used or time.time() >= creds.expires_at:
                await asyncio.to_thread(creds.refresh)
            return creds.access_token

    async def _refresh_later(self, creds: Credential) -> None:
        try:
            assert self._token_lock is not None
            async with self._token_lock:
                if time.time() > creds.expires_at - TOKEN_MARGIN_S:
                    await asyncio.to_thread(creds.refresh)
        except Exception:  # noqa: BLE001 - the token in hand stays; the next send past expiry fetches again
            pass
        finally:
            creds.refreshing = None

    async def send_one(self, message: Message) -> tuple[Result, Rule | None]:
        assert self.session is not None
        did = message.target.delivery_id
        started = time.perf_counter()
        try:
            body = encode(message, page_channel=self.page_channel)
        except PayloadTooLarge as exc:
            return Result(did, "permanent", None, str(exc)), None
        try:
            creds = await self.credential(message.target.app)
            token = await self.access_token(creds)
        except Exception as exc:  # noqa: BLE001 - sorted by token_failure
            return token_failure(did, exc, started), None
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
                except Exception as exc:  # noqa: BLE001 - FCM refused the first copy: nothing was delivered
                    return token_failure(did, exc, started), None
                continue
            message_text = (answer.get("error") or {}).get("message", "") if isinstance(answer, dict) else ""
            return with_latency(apply_rule(rule, did, f"{status} {key}", f"{key}: {message_text}", 0, wait),
                                started), rule
        raise AssertionError("unreachable")
