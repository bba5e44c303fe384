"""The hand-off to the broker (:func:`send_envelope`) and the outbox relay: publish outbox rows to the broker, and
republish what was left behind. Producers, workers and the outbox sweep all call these."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any, cast

import kombu.exceptions
from sqlalchemy import ColumnElement, and_, func, or_, select, update

from herald import db
from herald.errors import BrokerUnavailable
from herald.models import Outbox, utcnow
from herald.settings import get_settings

log = logging.getLogger(__name__)


_BACKOFF_STEPS = 6  # grace x 1, 2, 4, 8, 16, 32


def _due(grace_s: float) -> ColumnElement[bool]:
    """Rows whose last publish (or creation, if never published) is older than their backoff.

    Written as one range per attempt count, so that it is plain SQL on Postgres and SQLite alike.
    """
    now = utcnow()
    last = func.coalesce(Outbox.published_at, Outbox.created_at)
    steps = [and_(Outbox.publish_attempts <= 1, last < now - timedelta(seconds=grace_s))]
    for step in range(1, _BACKOFF_STEPS):
        attempts = Outbox.publish_attempts == step + 1 if step < _BACKOFF_STEPS - 1 else \
            Outbox.publish_attempts >= step + 1
        steps.append(and_(attempts, last < now - timedelta(seconds=grace_s * 2 ** step)))
    return or_(*steps)


INGEST_TASK = "herald.ingest"


def ingest_argsrepr(args: Any) -> str:
    """What Flower, ``celery events`` and the worker's "received" log show of an ingest task's arguments: the
    event's id and type, never its body (``data`` may hold what only its recipients may read).

    Celery puts ``argsrepr`` in the message headers (protocol 2) and in the task-sent and task-received events
    in place of ``repr(args)`` (https://docs.celeryq.dev/en/stable/internals/protocol.html#version-2).
    """
    envelopes = args if isinstance(args, list | tuple) else [args]
    shown = [{"id": str(e.get("id")), "type": str(e.get("type"))[:128]} if isinstance(e, dict)
             else f"<{type(e).__name__}>" for e in envelopes]
    return repr(shown)


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
            INGEST_TASK, args=[envelope], argsrepr=ingest_argsrepr([envelope]), kwargsrepr="{}", retry=True,
            retry_policy={"max_retries": settings.publish_max_retries, "interval_start": 0.2,
                          "interval_step": 0.5, "interval_max": 2.0},
        )
    except (kombu.exceptions.OperationalError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"broker unreachable after {settings.publish_max_retries} retries: "
                                f"{exc}; event {envelope.get('id')} was not accepted") from exc


def relay(ids: list[uuid.UUID] | None = None) -> int:
    """Publish the given outbox rows (after their commit), or every row left behind.

    A row is done once ingest has stored its event (``ingested_at``); until then it is
    republished ``HERALD_OUTBOX_GRACE_S`` after its last publish (the producer's own, in outbox and
    direct mode), then after twice that, four times, up to 32 times: a broker that lost the message
    gets it again within the grace period, while a long ingest backlog (the message is still queued)
    is not flooded with a copy of every waiting event each period. Ingest deduplicates, so a second
    copy is harmless.
    """
    settings = get_settings()
    with db.session() as s:
        query = select(Outbox.id, Outbox.envelope).where(Outbox.ingested_at.is_(None))
        if ids is not None:
            query = query.where(Outbox.id.in_(ids), Outbox.published_at.is_(None))
        else:
            query = query.where(_due(settings.outbox_grace_s)).order_by(Outbox.created_at)
        rows = s.execute(query.limit(5000)).all()
    published = 0
    for outbox_id, envelope in rows:
        try:
            send_envelope(cast(dict[str, Any], envelope))
        except Exception as exc:  # noqa: BLE001 - the broker is down: the row stays, the next sweep tries again
            with db.session() as s:
                s.execute(update(Outbox).where(Outbox.id == outbox_id).values(
                    publish_attempts=Outbox.publish_attempts + 1, last_error=str(exc)[:500]))
            log.warning("outbox %s not relayed: %s", outbox_id, exc)
            break
        with db.session() as s:
            s.execute(update(Outbox).where(Outbox.id == outbox_id).values(
                published_at=utcnow(), publish_attempts=Outbox.publish_attempts + 1, last_error=None))
        published += 1
    return published
