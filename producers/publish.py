"""publish(): hand an event to herald, directly to the broker or through the caller's outbox."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import kombu.exceptions
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from herald.errors import BrokerUnavailable
from herald.events import Event, validate_event
from herald.models import Outbox
from herald.settings import get_settings

log = logging.getLogger(__name__)

_PENDING = "herald_outbox_pending"
_HOOKED = "herald_outbox_hooked"


def send_envelope(envelope: dict[str, Any]) -> None:
    """Send one validated event to the ingest queue; return once the broker has it.

    Redis answers the push synchronously; on RabbitMQ publisher confirms are on
    (celeryconfig). Connection failures are retried ``HERALD_PUBLISH_MAX_RETRIES`` times, then
    :class:`BrokerUnavailable` is raised: an event is never dropped silently.
    """
    from herald.app import app

    settings = get_settings()
    try:
        app.send_task(
            "herald.ingest", args=[envelope], retry=True,
            retry_policy={"max_retries": settings.publish_max_retries, "interval_start": 0.2,
                          "interval_step": 0.5, "interval_max": 2.0},
        )
    except (kombu.exceptions.OperationalError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"broker unreachable after {settings.publish_max_retries} retries: "
                                f"{exc}; event {envelope.get('id')} was not accepted") from exc


def publish(event: Event | dict[str, Any], *, session: Session | None = None) -> uuid.UUID:
    """Publish one event and return its id.

    Without ``session`` the event goes straight to the broker (direct mode) and this call
    returns once the broker has confirmed it, or raises :class:`BrokerUnavailable`.

    With ``session`` (outbox mode) the event is written to herald's outbox table inside the
    caller's own transaction: nothing is published if that transaction rolls back; after it
    commits, the event is relayed to the broker, and the outbox sweep republishes anything a
    crash or a broker outage left behind. The session's database must hold herald's tables.

    Raises :class:`herald.errors.InvalidEvent` (nothing written or sent) for a bad event.
    """
    checked = validate_event(event)
    envelope = checked.to_json()
    if session is None:
        send_envelope(envelope)
        return checked.id
    session.add(Outbox(id=checked.id, idempotency_key=checked.key, envelope=envelope))
    if not session.info.get(_HOOKED):
        sa_event.listen(session, "after_commit", _after_commit)
        sa_event.listen(session, "after_rollback", _after_rollback)
        session.info[_HOOKED] = True
    session.info.setdefault(_PENDING, []).append(checked.id)
    return checked.id


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # SQLAlchemy fires after_commit for a SAVEPOINT release too: wait for the real commit
    ids = session.info.pop(_PENDING, None)
    if not ids:
        return
    from schedules.outbox import relay

    try:
        relay(ids)  # rows rolled back with a savepoint are simply not found
    except Exception:  # never fail the caller's commit: the outbox sweep will relay these rows
        log.exception("outbox relay after commit failed; the outbox sweep will retry")


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
