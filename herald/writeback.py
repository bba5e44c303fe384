"""Write-back to the admin platform: each change an answer or a sweep makes, as a signed webhook.

:func:`record` writes one :class:`~herald.models.WebhookMessage` per active endpoint of the
environment whose kinds match, in the caller's transaction (outbox-style: a change that rolls back
is never told). The ``writeback`` pool delivers them (docs/webhooks.md).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.models import WebhookEndpoint, WebhookMessage, utcnow

__all__ = ["KINDS", "DELIVER_TASK", "kind_matches", "record"]

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = (
    "incident.acknowledged", "incident.resolved", "incident.reassigned", "incident.escalated",
    "incident.follow_up_requested",
    "approval.approved", "approval.rejected", "approval.expired", "approval.info_requested",
)

DELIVER_TASK = "herald.writeback.deliver_due"
_KICK = "herald_writeback_kick"
_HOOKED = "herald_writeback_hooked"


def kind_matches(kind: str, patterns: Iterable[str]) -> bool:
    """Whether an endpoint that asked for ``patterns`` (``incident.*``, ``approval.approved``, ``*``) hears ``kind``."""
    return any(fnmatch.fnmatchcase(kind, pattern) for pattern in patterns)


def record(s: Session, *, environment: str, kind: str, subject: str, data: dict[str, Any]) -> int:
    """Queue ``kind`` about ``subject`` (``incident:12``) for every endpoint of ``environment`` that wants it.

    Written in the caller's transaction; after it commits the ``writeback`` pool is told to look (the
    periodic tick finds the rows anyway if that hint is lost). Returns how many messages were written.
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
                                 created_at=now, next_attempt_at=now))
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
    try:
        from herald.app import app

        app.send_task(DELIVER_TASK, retry=False)
    except Exception as exc:  # noqa: BLE001 - a hint only: the periodic tick delivers the rows anyway
        log.info("write-back kick not sent (%s); the next tick delivers", exc)


def _after_rollback(s: Session) -> None:
    if not s.in_nested_transaction():
        s.info.pop(_KICK, None)
