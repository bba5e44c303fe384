"""The recovery sweep: find work whose rows stayed pending past their deadline, enqueue it again.

The broker is only a hint (a Redis restarted without persistence loses its queues); every stage
leaves a row with a status and a time, so nothing depends on a message surviving.

Once per stall, not once per sweep: each event or batch re-enqueued is marked ``recovered_at`` (under the
same row locks that select it, so two sweeps never both take it). If it is still stalled a deadline later,
it is re-enqueued again only when the queues its message could wait on (its stage's queue, ``retry`` and
``ops``, unacknowledged messages included) are empty: then the broker lost the copy (a Redis restarted
without persistence). While they hold messages, the copy is most likely among them, waiting for a pool that
is down or busy, and another one would only pile up (a down deliver pool once collected 6,469 messages
that way). Where the depth cannot be read, the wait between two copies doubles instead (at most an hour).
``recovered_at`` is a column of its own because
``status_at`` and ``updated_at`` are the leases the tasks check (a ``resolving`` event or a ``sending``
target is taken over only once they are stale) and the delay the backlog scan measures.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select, update

from herald import db
from herald.app import app
from herald.lanes import OPS_QUEUE, RETRY_QUEUE, URGENT_QUEUE, Lane, lane_of, queue_for
from herald.models import Delivery, EventRow, utcnow
from herald.settings import get_settings
from schedules.queues import queue_stats

# Where a stalled event's or batch's message may also wait, besides its stage's own queue.
LANE_QUEUES = (RETRY_QUEUE, OPS_QUEUE, URGENT_QUEUE)

log = logging.getLogger(__name__)

LIMIT = 5000
MAX_WAIT_S = 3600.0  # the longest wait between two re-enqueues of the same stalled work
EVENT_STAGES = ("received", "enriched", "resolving")


def _due_again(recovered_at: datetime | None, stalled_since: datetime, now: datetime, deadline_s: float) -> bool:
    """Without queue depths: re-enqueue at once the first time, then after a wait that doubles."""
    if recovered_at is None:
        return True
    wait_s = min(max(deadline_s, (recovered_at - stalled_since).total_seconds()), max(deadline_s, MAX_WAIT_S))
    return (now - recovered_at).total_seconds() >= wait_s


class _Queues:
    """Whether the queues a stalled item's message could wait on are empty, read once per sweep."""

    def __init__(self) -> None:
        self._depth: dict[str, int | None] = {}

    def empty(self, queues: tuple[str, ...]) -> bool | None:
        missing = [q for q in queues if q not in self._depth]
        if missing:
            try:
                self._depth.update({st.queue: st.depth for st in queue_stats(missing)})
            except Exception:  # the broker cannot say: fall back to the doubling wait
                log.warning("recovery: queue depths unreadable", exc_info=True)
                self._depth.update(dict.fromkeys(missing))
        depths = [self._depth.get(q) for q in queues]
        return None if any(d is None for d in depths) else not any(depths)


def _again(queues: _Queues, names: tuple[str, ...], recovered_at: datetime | None, stalled_since: datetime,
           now: datetime, deadline_s: float) -> bool:
    if recovered_at is None:
        return True  # the first time a stall is seen: always (a dead worker's message may never come back)
    empty = queues.empty(names)
    return _due_again(recovered_at, stalled_since, now, deadline_s) if empty is None else empty


def recover_stalled() -> dict[str, int]:
    now = utcnow()
    deadline_s = get_settings().stall_deadline_s
    stale = now - timedelta(seconds=deadline_s)
    queues = _Queues()
    events = _claim_events(now, stale, deadline_s, queues)
    batches = _claim_batches(now, stale, deadline_s, queues)
    try:
        lanes = _lanes([e for e, _ in events], [b for _, b in batches])  # each goes back on its own lane
        for event_id, status in events:
            task = "herald.enrich" if status == "received" else "herald.resolve"
            app.send_task(task, args=[str(event_id)], queue=queue_for(task, lanes.get(event_id, "bulk")))
        for channel, batch_id in batches:
            task = f"herald.deliver.{channel}"
            app.send_task(task, args=[str(batch_id)], queue=queue_for(task, lanes.get(batch_id, "bulk")))
    except Exception:
        _unmark(events, batches)  # not enqueued (the broker is down): the next sweep tries again
        raise
    if events or batches:
        log.warning("recovered %d stalled events and %d stalled batches", len(events), len(batches))
    return {"events": len(events), "batches": len(batches)}


def _claim_events(now: datetime, stale: datetime, deadline_s: float, queues: _Queues) -> list[tuple[uuid.UUID, str]]:
    stalled = and_(EventRow.status.in_(EVENT_STAGES), EventRow.status_at < stale,
                   or_(EventRow.recovered_at.is_(None), EventRow.recovered_at < stale))
    with db.session() as s:
        query = (select(EventRow.id, EventRow.status, EventRow.status_at, EventRow.recovered_at)
                 .where(stalled).limit(LIMIT))
        if db.is_postgres():
            query = query.with_for_update(skip_locked=True)  # a task holds the row: it is not stalled
        due = [(r.id, r.status) for r in s.execute(query)
               if _again(queues, ("enrich" if r.status == "received" else "resolve", *LANE_QUEUES),
                         r.recovered_at, r.status_at, now, deadline_s)]
        if due:
            s.execute(update(EventRow).where(EventRow.id.in_([e for e, _ in due])).values(recovered_at=now))
        return due


def _claim_batches(now: datetime, stale: datetime, deadline_s: float, queues: _Queues) -> list[tuple[str, uuid.UUID]]:
    since = case((Delivery.status == "pending", Delivery.due_at), else_=Delivery.updated_at)
    stalled = and_(or_(and_(Delivery.status == "pending", Delivery.due_at < stale),
                       and_(Delivery.status == "sending", Delivery.updated_at < stale)),
                   or_(Delivery.recovered_at.is_(None), Delivery.recovered_at < stale))
    with db.session() as s:
        rows = s.execute(select(Delivery.channel, Delivery.batch_id, func.max(Delivery.recovered_at).label("last"),
                                func.min(since).label("since"))
                         .where(stalled).group_by(Delivery.channel, Delivery.batch_id).limit(LIMIT)).all()
        due = [(r.channel, r.batch_id) for r in rows
               if _again(queues, (f"deliver.{r.channel}", *LANE_QUEUES), r.last, r.since, now, deadline_s)]
        if due:
            s.execute(update(Delivery).where(Delivery.batch_id.in_([b for _, b in due]), stalled)
                      .values(recovered_at=now))
    return due


def _lanes(events: Sequence[uuid.UUID], batches: Sequence[uuid.UUID]) -> dict[uuid.UUID, Lane]:
    """The lane of each stalled event, and of each stalled batch's event (herald/lanes.py)."""
    lanes: dict[uuid.UUID, Lane] = {}
    with db.session() as s:
        if events:
            for r in s.execute(select(EventRow.id, EventRow.type, EventRow.source, EventRow.severity)
                               .where(EventRow.id.in_(events))):
                lanes[r.id] = lane_of(r.type, r.source, r.severity)
        if batches:
            for r in s.execute(select(Delivery.batch_id, EventRow.type, EventRow.source, EventRow.severity)
                               .join(EventRow, EventRow.id == Delivery.event_id)
                               .where(Delivery.batch_id.in_(batches)).distinct()):
                lanes[r.batch_id] = lane_of(r.type, r.source, r.severity)
    return lanes


def _unmark(events: Sequence[tuple[uuid.UUID, str]], batches: Sequence[tuple[str, uuid.UUID]]) -> None:
    try:
        with db.session() as s:
            if events:
                s.execute(update(EventRow).where(EventRow.id.in_([e for e, _ in events])).values(recovered_at=None))
            if batches:
                s.execute(update(Delivery).where(Delivery.batch_id.in_([b for _, b in batches]))
                          .values(recovered_at=None))
    except Exception:  # then they wait one more deadline, nothing worse
        log.warning("could not clear the recovery marks of work not re-enqueued", exc_info=True)
