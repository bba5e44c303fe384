"""publish(): hand an event to herald, directly to the broker or through the caller's outbox.

What "accepted" means in each mode is in the README's Durability section.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy import event as sa_event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.errors import BrokerUnavailable
from herald.events import Event, validate_event
from herald.models import Outbox
from herald.outbox import relay, send_envelope
from herald.settings import get_settings

log = logging.getLogger(__name__)

_PENDING = "herald_outbox_pending"
_HOOKED = "herald_outbox_hooked"


def publish(event: Event | dict[str, Any], *, session: Session | None = None) -> uuid.UUID:
    """Publish one event and return its id.

    Without ``session`` (direct mode) this call returns once the broker has confirmed the event,
    or raises :class:`BrokerUnavailable`. A producer with herald's database (``HERALD_DATABASE_URL``)
    first records the event in the outbox table, in a short transaction of its own, so the outbox
    sweep republishes it if the broker loses it before ingest stored it (a Redis restart without
    persistence, a killed ingest whose prefetched messages wait for the visibility timeout).

    With ``session`` (outbox mode) the event is written to herald's outbox table inside the
    caller's own transaction: nothing is published if that transaction rolls back; after it
    commits, the event is relayed to the broker, and the outbox sweep republishes anything a
    crash or a broker outage left behind. The session's database must hold herald's tables.

    Raises :class:`herald.errors.InvalidEvent` (nothing written or sent) for a bad event.
    """
    checked = validate_event(event)
    envelope = checked.to_json()
    if session is None:
        _publish_direct([(checked, envelope)])
        return checked.id
    session.add(Outbox(id=checked.id, idempotency_key=checked.key, envelope=envelope))
    if not session.info.get(_HOOKED):
        sa_event.listen(session, "after_commit", _after_commit)
        sa_event.listen(session, "after_rollback", _after_rollback)
        session.info[_HOOKED] = True
    session.info.setdefault(_PENDING, []).append(checked.id)
    return checked.id


def publish_many(events: Iterable[Event | dict[str, Any]]) -> list[uuid.UUID]:
    """Publish several events directly and return their ids, in order: :func:`publish` for a batch.

    Every event is validated before anything is written or sent. With herald's database, their outbox
    rows are written in ONE transaction (one commit instead of one per event), then each is sent. If the
    broker fails part-way, :class:`BrokerUnavailable` names how many were not accepted; those are not
    published (their rows are removed), the ones before them were.
    """
    checked = [validate_event(event) for event in events]
    _publish_direct([(c, c.to_json()) for c in checked])
    return [c.id for c in checked]


def _records_direct() -> bool:
    """Direct mode records events in the outbox when this producer has herald's database (not on SQLite:
    the embedded broker is a SQLite file too, as durable as the outbox would be)."""
    settings = get_settings()
    return settings.publish_direct_record and settings.database_url is not None and not \
        settings.database_url.startswith("sqlite")


def _publish_direct(items: list[tuple[Event, dict[str, Any]]]) -> None:
    recorded = _records_direct() and _record(items)
    for index, (_, envelope) in enumerate(items):
        try:
            send_envelope(envelope)
        except BrokerUnavailable as exc:
            if recorded:
                _forget([checked.id for checked, _ in items[index:]])
            if len(items) > 1:
                raise BrokerUnavailable(f"{exc} ({len(items) - index} of {len(items)} events not accepted, the "
                                        f"first {index} were)") from exc
            raise


def _record(items: list[tuple[Event, dict[str, Any]]]) -> bool:
    """Write the outbox rows of events about to be sent directly; False if the database cannot be reached.

    The row is not marked published after the send: that would cost a second commit per event, and the
    sweep does not need it (it republishes any row not ingested after the grace period, published or not).
    """
    try:
        with db.session() as s:
            s.execute(insert(Outbox), [dict(id=c.id, idempotency_key=c.key, envelope=envelope, publish_attempts=1)
                                       for c, envelope in items])
        return True
    except SQLAlchemyError as exc:
        # The database is down or refuses: the broker's confirm is what holds for these events (as for a
        # producer without a database). The event is not refused: ingest cannot store it before the
        # database is back anyway, and the broker keeps it until then.
        log.warning("could not record %d event(s) in the outbox before publishing (%s): published with the "
                    "broker's confirm only", len(items), str(exc).splitlines()[0])
        return False


def _forget(ids: list[uuid.UUID]) -> None:
    """Remove the outbox rows of events the broker did not accept: the caller is told they were not
    published, so the sweep must not publish them behind its back."""
    try:
        with db.session() as s:
            s.execute(delete(Outbox).where(Outbox.id.in_(ids)))
    except SQLAlchemyError:  # the caller may republish them: ingest deduplicates by idempotency key
        log.warning("could not remove the outbox rows of %d event(s) the broker refused; the outbox sweep "
                    "will publish them", len(ids))


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # SQLAlchemy fires after_commit for a SAVEPOINT release too: wait for the real commit
    ids = session.info.pop(_PENDING, None)
    if not ids:
        return
    try:
        relay(ids)  # rows rolled back with a savepoint are simply not found
    except Exception:  # never fail the caller's commit: the outbox sweep will relay these rows
        log.exception("outbox relay after commit failed; the outbox sweep will retry")


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
