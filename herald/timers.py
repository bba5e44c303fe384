"""Timed work lives in Postgres: rows with a due time, claimed by a short beat tick.

Long broker ETAs are fragile (a Redis countdown past ``visibility_timeout`` runs twice, a lost
queue loses it), so anything due later (an escalation step, a reminder) is a ``due_work`` row.
Every ``HERALD_DUE_TICK_INTERVAL_S`` the tick claims due rows with ``FOR UPDATE SKIP LOCKED``: two
ticking processes never take the same row, and neither waits for the other. The handler runs in
the claiming transaction, and the row is marked done in it, so a repeated tick finds nothing.

Each row is fenced by ``(token, step)``: :func:`complete` acts only on a row still due with the
token and step it read, and a handler checks its own subject (an incident's escalation level)
against the step, so a stale tick, or a step rescheduled meanwhile, does nothing.

Handlers are registered by kind with :func:`handler`, by the domain module that owns the subject
(herald/incidents.py: ``incident.escalate``).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from herald import db
from herald.models import DueWork, utcnow
from herald.settings import get_settings

log = logging.getLogger(__name__)

Summary = dict[str, int]
Handler = Callable[[Session, DueWork], bool]  # True: acted; False: the subject moved on (stale)
HANDLERS: dict[str, Handler] = {}
MAX_ATTEMPTS = 5


# The core modules that own timed work and register its handlers: loaded on first use, so a process that only
# ticks (or only schedules) knows every kind.
HANDLER_MODULES: tuple[str, ...] = ("herald.incidents",)


def _load_handlers() -> None:
    for module in HANDLER_MODULES:
        importlib.import_module(module)


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn
    return register


def schedule(s: Session, kind: str, subject: str, *, due_at: datetime, step: int = 1,
             payload: dict[str, Any] | None = None, token: uuid.UUID | None = None) -> DueWork:
    """Add timed work in the caller's transaction (it exists only if that transaction commits)."""
    _load_handlers()
    if kind not in HANDLERS:
        raise ValueError(f"no handler for due work {kind!r} (known: {', '.join(sorted(HANDLERS))})")
    row = DueWork(kind=kind, subject=subject, step=step, token=token or uuid.uuid4(), due_at=due_at,
                  payload=payload or {}, state="due", attempts=0)
    s.add(row)
    s.flush()
    return row


def cancel(s: Session, kind: str, subject: str) -> int:
    """Cancel every step still due for a subject (an acknowledged incident stops escalating)."""
    cancelled = s.execute(update(DueWork).where(DueWork.kind == kind, DueWork.subject == subject,
                                                DueWork.state == "due").values(state="cancelled", done_at=utcnow())
                          .returning(DueWork.id))
    return len(cancelled.all())


def complete(s: Session, row_id: int, token: uuid.UUID, step: int, *, state: str, by: str) -> bool:
    """The fence: finish the row only if it is still due with this token and step."""
    done = s.execute(update(DueWork).where(DueWork.id == row_id, DueWork.token == token, DueWork.step == step,
                                           DueWork.state == "due")
                     .values(state=state, done_at=utcnow(), done_by=by).returning(DueWork.id))
    return done.first() is not None


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def tick(now: datetime | None = None, *, limit: int | None = None) -> Summary:
    """Claim due rows (SKIP LOCKED), run their handlers, mark them; return what happened."""
    _load_handlers()
    now = now or utcnow()
    limit = limit or get_settings().due_batch_size
    by = _worker_id()
    counts = {"claimed": 0, "done": 0, "stale": 0, "failed": 0, "retry": 0}
    with db.session() as s:
        query = (select(DueWork).where(DueWork.state == "due", DueWork.due_at <= now)
                 .order_by(DueWork.due_at).limit(limit))
        if db.is_postgres():
            query = query.with_for_update(skip_locked=True)
        for row in list(s.scalars(query)):
            counts["claimed"] += 1
            kind, subject, step, token, attempts = row.kind, row.subject, row.step, row.token, row.attempts
            # The fence first: whoever marks the row done owns this step. With SKIP LOCKED the row is
            # already ours; on SQLite this conditional UPDATE is what keeps a second tick out.
            if not complete(s, row.id, token, step, state="done", by=by):
                counts["stale"] += 1
                continue
            fn = HANDLERS.get(kind)
            try:
                with s.begin_nested():  # a failing handler rolls back its own writes only
                    if fn is None:
                        raise LookupError(f"no handler for due work {kind!r}")
                    acted = fn(s, row)
            except Exception as exc:  # one bad row must not block the others
                attempts += 1
                failed = attempts >= MAX_ATTEMPTS
                retry_at = now + timedelta(seconds=get_settings().due_tick_interval_s * 2 ** attempts)
                s.execute(update(DueWork).where(DueWork.id == row.id).values(
                    state="failed" if failed else "due", attempts=attempts, done_at=None if not failed else now,
                    due_at=retry_at, last_error=f"{type(exc).__name__}: {exc}"[:2000]))
                counts["failed" if failed else "retry"] += 1
                log.exception("due work %s (%s %s step %s) failed", row.id, kind, subject, step)
                continue
            if acted:
                counts["done"] += 1
            else:  # the subject moved on (acknowledged, already at that step): nothing to do
                s.execute(update(DueWork).where(DueWork.id == row.id).values(state="stale"))
                counts["stale"] += 1
    return counts
