"""Write-back to the admin platform: each change an answer or a sweep makes, as a signed webhook.

Outbox-style: :func:`record` writes one :class:`~herald.models.WebhookMessage` per active endpoint of
the environment whose kinds match, in the caller's transaction, so a change that rolls back is never
told. The ``writeback`` pool delivers them (:func:`deliver_due`):

- signed per the Standard Webhooks specification (https://www.standardwebhooks.com/): headers
  ``webhook-id`` (``msg_<id>``, the same on every attempt: the receiver's idempotency key),
  ``webhook-timestamp`` and ``webhook-signature``, by the ``standardwebhooks`` package;
- in order per (endpoint, subject): a message is sent only when no earlier message of the same
  endpoint and subject is still pending, so ``incident:12 acknowledged`` never overtakes nothing and
  ``resolved`` never arrives before it;
- retried on anything but a 2xx with exponential backoff and full jitter (a ``Retry-After`` is a floor),
  until ``HERALD_WEBHOOK_RETRY_HORIZON_S`` (a day) after it was queued: then ``failed``, reported as the
  ``webhook_failed`` condition (``herald status``) and in ``herald webhooks list``;
- a ``410 Gone`` disables the endpoint and cancels its pending messages (``webhook_disabled``);
- every attempt is a :class:`~herald.models.WebhookAttempt` (status code, truncated answer, duration).

The secret is read at send time from the endpoint's ``secret_ref`` (``env:NAME`` or ``file:PATH``), never
stored, logged or put in a task's arguments. URLs are https, or http(s) on loopback when
``HERALD_WEBHOOK_ALLOW_LOOPBACK`` allows it; every address a host name resolves to is checked at connect
time (the Web Push resolver, herald/devices.py rules) and redirects are never followed.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import and_, exists, func, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, aliased

from herald import db, devices
from herald.errors import HeraldError, InvalidDevice
from herald.models import OpsCondition, WebhookAttempt, WebhookEndpoint, WebhookMessage, utcnow
from herald.safefiles import InputFileError, read_regular
from herald.settings import get_settings

__all__ = ["DELIVER_TASK", "KINDS", "Reply", "WebhookRefused", "WebhookSpec", "apply_endpoints", "backoff_s",
           "check_url", "deliver_due", "enable", "endpoint_states", "kind_matches", "list_messages", "read_secret",
           "record", "replay", "send_test", "signed_headers"]

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = (
    "incident.acknowledged", "incident.resolved", "incident.reassigned", "incident.escalated",
    "incident.follow_up_requested",
    "approval.approved", "approval.rejected", "approval.expired", "approval.info_requested",
)
TEST_KIND = "webhook.test"  # `herald webhooks test`: sent at once, never stored

DELIVER_TASK = "herald.writeback.deliver"
FAILED, DISABLED = "webhook_failed", "webhook_disabled"  # operations conditions (herald status)
MAX_SECRET_BYTES = 4096
MAX_ANSWER_CHARS = 1000  # of a receiver's answer, kept on the attempt
_KICK = "herald_writeback_kick"
_HOOKED = "herald_writeback_hooked"


class WebhookRefused(HeraldError, ValueError):
    """A webhook endpoint's URL or secret herald will not use; nothing was sent. Never quotes a secret."""


def kind_matches(kind: str, patterns: Iterable[str]) -> bool:
    """Whether an endpoint that asked for ``patterns`` (``incident.*``, ``approval.approved``, ``*``) hears ``kind``."""
    return any(fnmatch.fnmatchcase(kind, pattern) for pattern in patterns)


# --- recording (in the caller's transaction) ----------------------------------------------------------


def record(s: Session, *, environment: str, kind: str, subject: str, data: dict[str, Any]) -> int:
    """Queue ``kind`` about ``subject`` (``incident:12``) for every endpoint of ``environment`` that wants it.

    Written in the caller's transaction; after it commits the ``writeback`` pool is told to look (the
    periodic sweep finds the rows anyway if that hint is lost). Returns how many messages were written.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown write-back kind {kind!r} (known: {', '.join(KINDS)})")
    endpoints = s.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.environment == environment, WebhookEndpoint.active.is_(True),
        WebhookEndpoint.disabled_at.is_(None)).order_by(WebhookEndpoint.id)).all()
    now = utcnow()
    payload = {"type": kind, "timestamp": now.isoformat(), "environment": environment, "subject": subject,
               "data": data}
    written = 0
    for endpoint in endpoints:
        if kind_matches(kind, endpoint.kinds or []):
            s.add(WebhookMessage(endpoint_id=endpoint.id, subject=subject, kind=kind, payload=payload,
                                 created_at=now, next_attempt_at=now, status="pending", attempts=0))
            written += 1
    if written:
        s.flush()
        _kick_after_commit(s)
    return written


def _kick_after_commit(s: Session) -> None:
    if not s.info.get(_HOOKED):
        sa_event.listen(s, "after_commit", _after_commit)
        sa_event.listen(s, "after_rollback", _after_rollback)
        s.info[_HOOKED] = True
    s.info[_KICK] = True


def _after_commit(s: Session) -> None:
    if s.in_nested_transaction() or not s.info.pop(_KICK, False):
        return  # a SAVEPOINT released (wait for the real commit), or nothing recorded since the last one
    kick()


def _after_rollback(s: Session) -> None:
    if not s.in_nested_transaction():
        s.info.pop(_KICK, None)


def kick() -> None:
    """Tell the ``writeback`` pool to look now: a hint only, the periodic sweep delivers anyway."""
    try:
        from herald.app import app

        app.send_task(DELIVER_TASK, retry=False)
    except Exception as exc:  # noqa: BLE001 - never fail the caller's commit over a hint
        log.info("write-back kick not sent (%s); the next sweep delivers", exc)


# --- configuration: the directory file's webhooks section -------------------------------------------

_SECRET_REF = re.compile(r"(env:[A-Za-z_][A-Za-z0-9_]{0,127}|file:/.{1,1000})")


class WebhookSpec(BaseModel):
    """One endpoint in the directory file's ``webhooks:`` section (docs/webhooks.md)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    environment: str
    url: str
    secret: str  # where the secret is read: env:NAME or file:/absolute/path, never the secret itself
    kinds: list[str] = Field(min_length=1)

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        known = get_settings().environments
        if value not in known:
            raise ValueError(f"unknown environment {value!r} (HERALD_ENVIRONMENTS: {', '.join(known)})")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        check_url(value)
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not _SECRET_REF.fullmatch(value):
            # never echo the value: a secret pasted in by mistake must not reach a log or a terminal
            raise ValueError("secret names where the secret is read, env:NAME or file:/absolute/path "
                             "(never the secret itself)")
        return value

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not fnmatch.filter(KINDS, pattern):
                raise ValueError(f"{pattern!r} matches no write-back kind ({', '.join(KINDS)})")
        return value


def apply_endpoints(s: Session, specs: Sequence[WebhookSpec]) -> dict[str, int]:
    """Make the endpoints match the file, in the caller's transaction.

    An endpoint gone from the file is deactivated (its messages and attempts stay) and its pending messages
    cancelled. A disabled endpoint (410) stays disabled until its URL changes or ``herald webhooks enable``.
    """
    now = utcnow()
    for spec in specs:
        row = s.get(WebhookEndpoint, spec.id)
        if row is None:
            row = WebhookEndpoint(id=spec.id, environment=spec.environment, url=spec.url)
            s.add(row)
        elif row.url != spec.url and row.disabled_at is not None:
            row.disabled_at, row.disabled_reason = None, None
            _clear(s, DISABLED, spec.id)
        row.environment, row.url, row.secret_ref, row.kinds, row.active = (
            spec.environment, spec.url, spec.secret, list(spec.kinds), True)
    gone = set(s.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.active.is_(True)))) - \
        {spec.id for spec in specs}
    if gone:
        s.execute(update(WebhookEndpoint).where(WebhookEndpoint.id.in_(gone)).values(active=False))
        _cancel_pending(s, gone, "endpoint removed from the directory", now)
    s.flush()
    return {"webhooks": len(specs), "removed_webhooks": len(gone)}


def _cancel_pending(s: Session, endpoint_ids: Iterable[str], reason: str, now: datetime) -> int:
    done = s.execute(update(WebhookMessage).where(WebhookMessage.endpoint_id.in_(list(endpoint_ids)),
                                                  WebhookMessage.status == "pending")
                     .values(status="cancelled", last_error=reason, next_attempt_at=now)
                     .returning(WebhookMessage.id))
    return len(done.all())


# --- URLs and secrets ---------------------------------------------------------------------------------


def check_url(url: Any, *, allow_loopback: bool | None = None) -> str:
    """Refuse a URL herald must not POST to (herald/devices.py rules); returns its host.

    https only, no user name, a domain name or a public address; on loopback (http too) only when
    ``HERALD_WEBHOOK_ALLOW_LOOPBACK`` allows it. Checked when the directory is loaded and before each send;
    the addresses a host name resolves to are checked again at connect time.
    """
    loopback_ok = get_settings().webhook_allow_loopback if allow_loopback is None else allow_loopback
    try:
        host = devices.check_endpoint(url, allow_loopback=True)
    except InvalidDevice as exc:
        raise WebhookRefused(str(exc).replace("the endpoint", "the webhook URL")) from None
    if not loopback_ok:
        try:
            devices.check_endpoint(url, allow_loopback=False)
        except InvalidDevice:
            raise WebhookRefused("the webhook URL points at this machine (loopback); HERALD_WEBHOOK_ALLOW_LOOPBACK "
                                 "allows it for a local receiver") from None
    return host


def read_secret(ref: str) -> str:
    """The ``whsec_`` secret ``ref`` names (``env:NAME`` or ``file:PATH``); raises WebhookRefused, never quoting it."""
    from standardwebhooks.webhooks import Webhook

    kind, _, where = ref.partition(":")
    if kind == "env":
        secret = os.environ.get(where, "").strip()
        if not secret:
            raise WebhookRefused(f"the webhook secret variable {where} is not set")
    elif kind == "file":
        try:
            secret = read_regular(where, max_bytes=MAX_SECRET_BYTES).decode("utf-8", "replace").strip()
        except InputFileError as exc:
            raise WebhookRefused(f"the webhook secret file {exc}") from None
    else:
        raise WebhookRefused("a webhook secret is named env:NAME or file:PATH")
    # The package decodes leniently (it drops what is not base64): check strictly here, 24 to 64 bytes as the
    # specification asks, so a mangled secret is refused rather than signing with part of it.
    raw = secret.removeprefix("whsec_")
    try:
        size = len(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))
        Webhook(secret)
    except Exception:  # noqa: BLE001 - binascii, empty secret...: the value must not appear in the message
        size = 0
    if not 24 <= size <= 64:
        raise WebhookRefused(f"the webhook secret in {ref} is not a Standard Webhooks secret (whsec_ and 24 to 64 "
                             "bytes in base64)")
    return secret


def signed_headers(secret: str, msg_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (``at``: now; receivers refuse a timestamp 5 minutes off)."""
    from standardwebhooks.webhooks import Webhook

    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, at, body),
            "content-type": "application/json", "user-agent": "herald-webhooks/1"}


def _body(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


# --- retries ----------------------------------------------------------------------------------------


def backoff_s(attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None = None,
              rng: random.Random | None = None) -> float:
    """The wait after ``attempt`` failed attempts (1, 2, ...): base x 2^(attempt-1), full jitter over its upper half,
    at most ``max_s``; a receiver's Retry-After is a floor (still bounded by ``max_s``)."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, max_s)


def next_attempt_at(created_at: datetime, attempt: int, now: datetime, *, retry_after_s: float | None = None
                    ) -> datetime | None:
    """When to try again after ``attempt`` failed attempts, or None: past the horizon, the message has failed."""
    settings = get_settings()
    at = now + timedelta(seconds=backoff_s(attempt, base_s=settings.webhook_retry_base_s,
                                           max_s=settings.webhook_retry_max_s, retry_after_s=retry_after_s))
    return None if at > created_at + timedelta(seconds=settings.webhook_retry_horizon_s) else at


# --- sending ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What a receiver answered (``status_code`` None: no answer; ``error`` says why)."""

    status_code: int | None
    body: str
    error: str | None
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def summary(self) -> str | None:
        """For the attempt row and ``last_error``: truncated, never the request (it carries the signature)."""
        if self.ok:
            return None
        text = self.error if self.status_code is None else f"HTTP {self.status_code}: {self.body}"
        return (text or "")[:MAX_ANSWER_CHARS]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff applies


async def _post(url: str, body: str, headers: dict[str, str], *, timeout_s: float, allow_loopback: bool) -> Reply:
    import aiohttp

    from herald.channels.webpush.provider import PublicResolver

    started = time.monotonic()

    def reply(code: int | None, text: str, error: str | None, retry_after: float | None = None) -> Reply:
        return Reply(code, text[:MAX_ANSWER_CHARS], error, int((time.monotonic() - started) * 1000), retry_after)

    connector = aiohttp.TCPConnector(resolver=PublicResolver(allow_loopback), force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
                http.post(url, data=body.encode(), headers=headers, allow_redirects=False) as response:
            text = (await response.content.read(MAX_ANSWER_CHARS)).decode("utf-8", "replace")
            return reply(response.status, text, None, _retry_after(response.headers.get("Retry-After")))
    except InvalidDevice as exc:  # the resolver refused what the host name resolves to now
        return reply(None, "", f"refused: {exc}")
    except TimeoutError:
        return reply(None, "", f"no answer within {timeout_s:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return reply(None, "", f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Claimed:
    id: int
    endpoint_id: str
    url: str
    secret_ref: str
    kind: str
    subject: str
    payload: dict[str, Any]
    attempt: int  # this attempt's number: the fence of its outcome
    created_at: datetime


async def _send(message: _Claimed, *, timeout_s: float, allow_loopback: bool) -> Reply:
    try:
        check_url(message.url, allow_loopback=allow_loopback)
        secret = read_secret(message.secret_ref)
    except WebhookRefused as exc:
        return Reply(None, "", f"not sent: {exc}", 0)
    body = _body(message.payload)
    # a test message is never stored: its id is its own subject (test:<random>), so no receiver skips it as seen
    msg_id = f"msg_{message.id}" if message.id else f"msg_{message.subject.replace(':', '_')}"
    headers = signed_headers(secret, msg_id, body, datetime.now(UTC))
    return await _post(message.url, body, headers, timeout_s=timeout_s, allow_loopback=allow_loopback)


async def _send_all(messages: list[_Claimed]) -> list[Reply]:
    settings = get_settings()
    return await asyncio.gather(*(_send(m, timeout_s=settings.webhook_timeout_s,
                                        allow_loopback=settings.webhook_allow_loopback) for m in messages))


def send_test(endpoint_id: str) -> Reply:
    """Send a signed ``webhook.test`` message to an endpoint now (``herald webhooks test``); nothing is stored."""
    with db.session() as s:
        endpoint = s.get(WebhookEndpoint, endpoint_id)
        if endpoint is None:
            raise LookupError(f"no webhook endpoint {endpoint_id!r}")
        now = utcnow()
        claimed = _Claimed(0, endpoint.id, endpoint.url, endpoint.secret_ref, TEST_KIND, f"test:{uuid.uuid4().hex}", {
            "type": TEST_KIND, "timestamp": now.isoformat(), "environment": endpoint.environment,
            "subject": "test", "data": {"endpoint": endpoint.id}}, 1, now)
    settings = get_settings()
    return asyncio.run(_send(claimed, timeout_s=settings.webhook_timeout_s,
                             allow_loopback=settings.webhook_allow_loopback))


# --- the writeback pool's work --------------------------------------------------------------------


def deliver_due(now: datetime | None = None, *, limit: int | None = None, max_rounds: int = 20) -> dict[str, int]:
    """Deliver every due message, in order per (endpoint, subject); returns what happened.

    Each round claims (SKIP LOCKED) the due messages that are the earliest pending of their endpoint and
    subject, leases them (``next_attempt_at`` moves past the request's timeout, so a worker that dies
    mid-send leaves them due again, and the receiver dedupes by ``webhook-id``), commits, sends them
    concurrently (one per subject: order holds), then records each outcome, fenced by the attempt number.
    Another round follows while one delivered something: the next message of that subject may be due.
    ``now`` lets tests move the clock; the signature always carries the real time.
    """
    now = now or utcnow()
    limit = limit or get_settings().webhook_batch_size
    counts = {"claimed": 0, "delivered": 0, "retrying": 0, "failed": 0, "disabled": 0, "cancelled": 0}
    with db.session() as s:
        counts["cancelled"] += _cancel_orphans(s, now)
    for _ in range(max_rounds):
        claimed = _claim(now, limit)
        if not claimed:
            break
        counts["claimed"] += len(claimed)
        replies = asyncio.run(_send_all(claimed))
        delivered_before = counts["delivered"]
        with db.session() as s:
            # deliveries first: a 410 in the same batch cancels the endpoint's pending messages, not what it got
            for message, reply in sorted(zip(claimed, replies, strict=True), key=lambda pair: not pair[1].ok):
                counts[_settle(s, message, reply, now)] += 1
        if counts["delivered"] == delivered_before:
            break
    return counts


def _cancel_orphans(s: Session, now: datetime) -> int:
    """Pending messages of an endpoint removed from the file or disabled: cancelled, never sent."""
    stopped = select(WebhookEndpoint.id).where(
        (WebhookEndpoint.active.is_(False)) | (WebhookEndpoint.disabled_at.is_not(None)))
    return _cancel_pending(s, s.scalars(stopped).all(), "endpoint removed or disabled", now)


def _claim(now: datetime, limit: int) -> list[_Claimed]:
    earlier = aliased(WebhookMessage)
    blocked = exists().where(earlier.endpoint_id == WebhookMessage.endpoint_id,
                             earlier.subject == WebhookMessage.subject, earlier.status == "pending",
                             earlier.id < WebhookMessage.id)
    query = (select(WebhookMessage, WebhookEndpoint)
             .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
             .where(WebhookMessage.status == "pending", WebhookMessage.next_attempt_at <= now, ~blocked,
                    WebhookEndpoint.active.is_(True), WebhookEndpoint.disabled_at.is_(None))
             .order_by(WebhookMessage.next_attempt_at, WebhookMessage.id).limit(limit))
    if db.is_postgres():
        query = query.with_for_update(skip_locked=True, of=WebhookMessage)
    lease = now + timedelta(seconds=get_settings().webhook_timeout_s * 3 + 30)
    claimed: list[_Claimed] = []
    with db.session() as s:
        for message, endpoint in s.execute(query).all():
            message.attempts += 1
            message.next_attempt_at = lease
            claimed.append(_Claimed(message.id, endpoint.id, endpoint.url, endpoint.secret_ref, message.kind,
                                    message.subject, dict(message.payload), message.attempts, message.created_at))
    return claimed


def _settle(s: Session, message: _Claimed, reply: Reply, now: datetime) -> str:
    """Record one attempt and its outcome; returns the counter it adds to."""
    s.add(WebhookAttempt(message_id=message.id, at=utcnow(), status_code=reply.status_code, error=reply.summary(),
                         duration_ms=reply.duration_ms))
    fence = and_(WebhookMessage.id == message.id, WebhookMessage.status == "pending",
                 WebhookMessage.attempts == message.attempt)
    ids = {"message": message.id, "endpoint": message.endpoint_id, "subject": message.subject, "kind": message.kind}
    if reply.ok:
        s.execute(update(WebhookMessage).where(fence).values(status="delivered", delivered_at=utcnow(),
                                                             last_error=None))
        log.info("webhook delivered %s", ids)
        return "delivered"
    if reply.status_code == 410:
        _disable(s, message, now)
        return "disabled"
    retry_at = next_attempt_at(message.created_at, message.attempt, now, retry_after_s=reply.retry_after_s)
    if retry_at is None:
        s.execute(update(WebhookMessage).where(fence).values(status="failed", last_error=reply.summary()))
        failed = s.scalar(select(func.count()).where(WebhookMessage.endpoint_id == message.endpoint_id,
                                                     WebhookMessage.status == "failed")) or 0
        _raise(s, FAILED, message.endpoint_id, float(failed), now)
        log.warning("webhook failed, retries used up %s: %s", ids, reply.summary())
        return "failed"
    s.execute(update(WebhookMessage).where(fence).values(next_attempt_at=retry_at, last_error=reply.summary()))
    log.info("webhook not delivered %s, retry at %s: %s", ids, retry_at.isoformat(), reply.summary())
    return "retrying"


def _disable(s: Session, message: _Claimed, now: datetime) -> None:
    """The receiver said 410 Gone: stop sending to it at all (docs/webhooks.md)."""
    reason = f"receiver answered 410 Gone to message {message.id}"
    s.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == message.endpoint_id,
                                            WebhookEndpoint.disabled_at.is_(None))
              .values(disabled_at=utcnow(), disabled_reason=reason))
    cancelled = _cancel_pending(s, [message.endpoint_id], f"endpoint disabled: {reason}", now)
    _raise(s, DISABLED, message.endpoint_id, 1.0, now)
    log.warning("webhook endpoint %s disabled (%s); %d pending message(s) cancelled", message.endpoint_id, reason,
                cancelled)


# --- operations conditions (herald status) ---------------------------------------------------------


def _raise(s: Session, condition: str, endpoint_id: str, value: float, now: datetime) -> None:
    row = s.get(OpsCondition, (condition, endpoint_id), with_for_update=True)
    if row is None:
        row = OpsCondition(condition=condition, resource=endpoint_id, raised=False, threshold=1.0)
        s.add(row)
    if not row.raised:
        row.raised, row.raised_at, row.under_since = True, now, None
    row.value, row.updated_at = value, now
    s.flush()


def _clear(s: Session, condition: str, endpoint_id: str) -> None:
    now = utcnow()
    s.execute(update(OpsCondition).where(OpsCondition.condition == condition, OpsCondition.resource == endpoint_id,
                                         OpsCondition.raised.is_(True))
              .values(raised=False, cleared_at=now, updated_at=now, value=0.0))


# --- what operators do (herald webhooks) -----------------------------------------------------------


def replay(s: Session, *, message_id: int | None = None, failed: bool = False, endpoint: str | None = None) -> int:
    """Queue messages again: one by id (any state but pending), or every failed one (of one endpoint).

    A replayed message starts over (attempts, and the retry horizon counts from now) with the same
    ``webhook-id``: a receiver that already has it may skip it. Returns how many were queued.
    """
    if (message_id is None) == (not failed):
        raise ValueError("name one message, or --failed")
    query = update(WebhookMessage).where(WebhookMessage.status != "pending")
    if message_id is not None:
        query = query.where(WebhookMessage.id == message_id)
    else:
        query = query.where(WebhookMessage.status == "failed")
    if endpoint is not None:
        query = query.where(WebhookMessage.endpoint_id == endpoint)
    now = utcnow()
    rows = s.execute(query.values(status="pending", attempts=0, next_attempt_at=now, created_at=now,
                                  delivered_at=None, last_error=None)
                     .returning(WebhookMessage.endpoint_id)).all()
    for endpoint_id in {row[0] for row in rows}:
        if not s.scalar(select(func.count()).where(WebhookMessage.endpoint_id == endpoint_id,
                                                   WebhookMessage.status == "failed")):
            _clear(s, FAILED, endpoint_id)
    if rows:
        _kick_after_commit(s)
    return len(rows)


def enable(s: Session, endpoint_id: str) -> None:
    """Enable an endpoint a 410 disabled (the admin platform is back); its cancelled messages stay cancelled."""
    endpoint = s.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise LookupError(f"no webhook endpoint {endpoint_id!r}")
    endpoint.disabled_at, endpoint.disabled_reason = None, None
    _clear(s, DISABLED, endpoint_id)


def endpoint_states(s: Session) -> list[dict[str, Any]]:
    """Every endpoint with its state (active, disabled, removed) and its messages by status."""
    counts: dict[str, dict[str, int]] = {}
    for endpoint_id, status, count in s.execute(
            select(WebhookMessage.endpoint_id, WebhookMessage.status, func.count())
            .group_by(WebhookMessage.endpoint_id, WebhookMessage.status)):
        counts.setdefault(endpoint_id, {})[status] = count
    out = []
    for e in s.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.environment, WebhookEndpoint.id)):
        state = "removed" if not e.active else "disabled" if e.disabled_at is not None else "active"
        by_status = counts.get(e.id, {})
        out.append({"id": e.id, "environment": e.environment, "url": e.url, "kinds": list(e.kinds or []),
                    "state": state, "disabled_at": e.disabled_at.isoformat() if e.disabled_at else None,
                    "disabled_reason": e.disabled_reason,
                    **{k: by_status.get(k, 0) for k in ("pending", "delivered", "failed", "cancelled")}})
    return out


def list_messages(s: Session, *, endpoint: str | None = None, status: str | None = None, limit: int = 100
                  ) -> list[dict[str, Any]]:
    """The newest messages (of one endpoint, in one status) with their last error: what ``replay`` takes by id."""
    query = select(WebhookMessage).order_by(WebhookMessage.id.desc()).limit(limit)
    if endpoint is not None:
        query = query.where(WebhookMessage.endpoint_id == endpoint)
    if status is not None:
        query = query.where(WebhookMessage.status == status)
    return [{"id": m.id, "endpoint": m.endpoint_id, "subject": m.subject, "kind": m.kind, "status": m.status,
             "attempts": m.attempts, "created_at": m.created_at.isoformat(),
             "next_attempt_at": m.next_attempt_at.isoformat() if m.status == "pending" else None,
             "delivered_at": m.delivered_at.isoformat() if m.delivered_at else None, "last_error": m.last_error}
            for m in s.scalars(query)]
