"""The outbox relay: publish outbox rows to the broker, and republish what was left behind."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import and_, or_, select, update

from herald import db
from herald.models import Outbox, utcnow
from herald.settings import get_settings

log = logging.getLogger(__name__)


def relay(ids: list[uuid.UUID] | None = None) -> int:
    """Publish the given outbox rows (after their commit), or every row left behind.

    A row is done once ingest has stored its event (``ingested_at``); until then it is
    republished after ``HERALD_OUTBOX_GRACE_S``. Ingest deduplicates, so a second copy is harmless.
    """
    from producers.publish import send_envelope  # producers depend on herald, not the reverse

    settings = get_settings()
    now = utcnow()
    grace = now - timedelta(seconds=settings.outbox_grace_s)
    with db.session() as s:
        query = select(Outbox.id, Outbox.envelope).where(Outbox.ingested_at.is_(None))
        if ids is not None:
            query = query.where(Outbox.id.in_(ids), Outbox.published_at.is_(None))
        else:
            query = query.where(or_(and_(Outbox.published_at.is_(None), Outbox.created_at < grace),
                                    Outbox.published_at < grace))
        rows = s.execute(query.limit(5000)).all()
    published = 0
    for outbox_id, envelope in rows:
        try:
            send_envelope(cast(dict[str, Any], envelope))
        except Exception as exc:  # the broker is down: the row stays, the next sweep tries again
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
