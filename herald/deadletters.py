"""The dead-letter table: work that cannot go on by itself, kept with its reason, replayable."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from herald import db
from herald.models import DeadLetter, Delivery, utcnow

log = logging.getLogger(__name__)

BODY_LIMIT = 4000


def record(kind: str, reason: str, *, task_name: str | None = None, queue: str | None = None,
           ref: dict[str, Any] | None = None, body: str | None = None) -> int:
    """Write one dead letter in its own transaction and return its id."""
    with db.session() as s:
        row = DeadLetter(kind=kind, reason=reason[:4000], task_name=task_name, queue=queue,
                         ref=ref or {}, body=body[:BODY_LIMIT] if body else None)
        s.add(row)
        s.flush()
        log.error("dead letter %s: %s %s: %s", row.id, kind, task_name or "", reason,
                  extra={"dead_letter_id": row.id, "task_name": task_name})
        return row.id


def replay(ids: list[int] | None = None, *, include_replayed: bool = False) -> list[int]:
    """Send dead letters back into the pipeline; returns the ids replayed.

    Task dead letters are re-sent with their original (id-only) arguments; delivery dead letters
    put their targets back to pending and re-enqueue their batches. Malformed messages have
    nothing to replay and are skipped.
    """
    from herald.app import app
    from herald.routing import TASK_ROUTES

    replayed: list[int] = []
    sends: list[tuple[str, list[Any]]] = []
    with db.session() as s:
        query = select(DeadLetter).order_by(DeadLetter.id)
        if ids:
            query = query.where(DeadLetter.id.in_(ids))
        elif not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        for row in s.scalars(query.with_for_update()):
            if row.kind == "delivery":
                delivery_ids = row.ref.get("delivery_ids", [])
                s.execute(update(Delivery).where(Delivery.id.in_(delivery_ids))
                          .values(status="pending", attempts=0, due_at=utcnow(), updated_at=utcnow()))
                batches = s.execute(select(Delivery.channel, Delivery.batch_id)
                                    .where(Delivery.id.in_(delivery_ids)).distinct()).all()
                sends += [(f"herald.deliver.{ch}", [str(b)]) for ch, b in batches]
            elif row.kind == "task" and row.task_name in TASK_ROUTES and "args" in row.ref:
                sends.append((row.task_name, list(row.ref["args"])))
            else:
                continue
            row.replayed_at = utcnow()
            row.replay_count += 1
            replayed.append(row.id)
    # Enqueue only after commit: a worker must find the rows already reset.
    for name, args in sends:
        app.send_task(name, args=args)
    return replayed
