"""The one routing table: every task's queue, and the worker pools that consume them.

A test fails if a registered task has no route here. Queues are pools: a slow APNs never
starves ingest, and each pool is scaled or restarted alone.

Lanes: the pipeline tasks (ingest, enrich, resolve, deliver.<channel> and its retries) run on the
bulk lane, their own queues in :data:`TASK_ROUTES`, except for herald's own operations alerts
(:func:`is_ops`: an ``ops.*`` event raised by a sweep or by the delivery worker). Those ride the ops
lane: every one of their tasks goes to :data:`OPS_QUEUE`, which the ``sweeps`` pool consumes, so an
alert that ingest is dead, or backlogged, or that a deliver pool is down, never waits for that pool.
The lane is chosen per send (:func:`queue_for`): the first send by :func:`task_route` from the event in
the message (the outbox relay publishes ``herald.ingest`` with the envelope), each later one by
the stage that forwards the event, from the stored event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from herald import channels

# One deliver task, queue and pool per registered channel (herald/channels/registry.py), known when
# this module is first imported: a plugin channel registers through its entry point, before that.
DELIVER_ROUTES: dict[str, str] = {spec.task: spec.queue for spec in channels.specs()}

TASK_ROUTES: dict[str, str] = {
    "herald.ingest": "ingest",
    "herald.enrich": "enrich",
    "herald.resolve": "resolve",
    **DELIVER_ROUTES,
    "herald.sweep.recover": "sweeps",
    "herald.sweep.outbox": "sweeps",
    # sweeps (schedules/periodic.py)
    "herald.sweep.credentials": "sweeps",
    "herald.sweep.backlog": "sweeps",
    "herald.sweep.due": "sweeps",
    "herald.sweep.approvals": "sweeps",
    "herald.sweep.purge": "sweeps",
    # write-back webhooks (herald/writeback.py): their own pool, so a slow receiver never holds a sweep
    "herald.writeback.deliver": "writeback",
    "herald.sweep.writeback": "writeback",
}

RETRY_QUEUE = "retry"

# The ops lane: herald's own operations alerts, through every stage, on one queue of their own.
OPS_QUEUE = "ops"
OPS_LANE_TASKS: frozenset[str] = frozenset(
    ("herald.ingest", "herald.enrich", "herald.resolve", *DELIVER_ROUTES))
# Who raises herald's own operations alerts (an event's ``source``): the sweeps and the delivery worker.
OPS_SOURCES: tuple[str, ...] = ("herald/sweep.", "herald/deliver")


def is_ops(event_type: str, source: str) -> bool:
    """Whether an event rides the ops lane: an ``ops.*`` event herald raised itself.

    Operations events published by integration code (flow 6 from outside) take the bulk lane: a
    flood of them must not hold herald's own alerts.
    """
    return event_type.startswith("ops.") and source.startswith(OPS_SOURCES)


def queue_for(task: str, *, ops: bool, retry: bool = False) -> str:
    """The queue of one send of ``task``: its lane's (``retry``: a delivery's retry)."""
    if ops and task in OPS_LANE_TASKS:
        return OPS_QUEUE
    return RETRY_QUEUE if retry else TASK_ROUTES[task]


def task_route(name: str, args: Sequence[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any],
          task: Any = None, **_: Any) -> dict[str, str] | None:
    """Celery's router (``task_routes``): :data:`TASK_ROUTES`, and the lane of an ingest from its envelope.

    A ``queue=`` given to the send wins over this (Celery merges the router's answer under it).
    """
    if name not in TASK_ROUTES:
        return None
    envelope = args[0] if name == "herald.ingest" and args else None
    ops = isinstance(envelope, dict) and is_ops(str(envelope.get("type", "")), str(envelope.get("source", "")))
    return {"queue": queue_for(name, ops=ops)}


@dataclass(frozen=True)
class WorkerPool:
    """How one pool is started by default (``herald worker --pool NAME`` can override)."""

    queues: tuple[str, ...]
    concurrency: int
    prefetch_multiplier: int
    kind: str = "prefork"


POOLS: dict[str, WorkerPool] = {
    # Short tasks: a little prefetch keeps the process busy between round trips.
    "ingest": WorkerPool(("ingest",), concurrency=2, prefetch_multiplier=8),
    "enrich": WorkerPool(("enrich",), concurrency=2, prefetch_multiplier=8),
    # One event fans out to many rows: take one at a time so a big event does not hold others.
    "resolve": WorkerPool(("resolve",), concurrency=2, prefetch_multiplier=1),
    # A batch holds up to HERALD_BATCH_SIZE targets and waits on the network: one at a time.
    **{queue: WorkerPool((queue,), concurrency=2, prefetch_multiplier=1) for queue in DELIVER_ROUTES.values()},
    RETRY_QUEUE: WorkerPool((RETRY_QUEUE,), concurrency=1, prefetch_multiplier=1),
    # The sweeps, and the ops lane (herald's own operations alerts, every stage): two processes, so an
    # alert is not held behind a long sweep.
    "sweeps": WorkerPool((OPS_QUEUE, "sweeps"), concurrency=2, prefetch_multiplier=1),
    # Write-back webhooks: each run sends a batch concurrently and waits on receivers; one message at a time.
    "writeback": WorkerPool(("writeback",), concurrency=2, prefetch_multiplier=1),
}

QUEUES: tuple[str, ...] = tuple(dict.fromkeys(q for pool in POOLS.values() for q in pool.queues))

ALL_POOL = "all"


def pool_queues(name: str) -> tuple[str, ...]:
    """The queues of a pool, of ``all``, or of several pools separated by commas."""
    if name == ALL_POOL:
        return QUEUES
    queues: list[str] = []
    for part in name.split(","):
        if part.strip() not in POOLS:
            raise KeyError(part)
        queues += POOLS[part.strip()].queues
    return tuple(dict.fromkeys(queues))
