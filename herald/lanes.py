"""The one routing table: every task's queue, and the worker pools that consume them.

A test fails if a registered task has no route here. Queues are pools: a slow APNs never
starves ingest, and each pool is scaled or restarted alone.

Lanes: every event rides one lane through every stage (ingest, enrich, resolve, deliver.<channel> and
its retries), chosen by :func:`lane_of`:

- **ops**: herald's own operations alerts (:func:`is_ops`: an ``ops.*`` event raised by a sweep or by the
  delivery worker) go to :data:`OPS_QUEUE`, which the ``sweeps`` pool consumes, so an alert that ingest is
  dead, or backlogged, or that a deliver pool is down, never waits for that pool.
- **urgent**: pages (severity critical or error, every escalation step among them) go to
  :data:`URGENT_QUEUE`, which the ``urgent`` pool alone consumes, so a page never waits behind a business
  fan-out in any stage: not behind a 100,000-device resolve, nor behind the hundreds of batches it enqueued.
  Measured (bench/RESULTS.md, page-during-burst) against the alternatives; docs/architecture.md says why.
- **bulk**: everything else, on each stage's own queue in :data:`TASK_ROUTES` (a delivery's retry on
  :data:`RETRY_QUEUE`).

The lane is chosen per send (:func:`queue_for`): the first send by :func:`task_route` from the event in
the message (the outbox relay publishes ``herald.ingest`` with the envelope), each later one by
the stage that forwards the event, from the stored event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from herald import channels
from herald.events import EVENT_TYPES, PAGE_SEVERITIES
from herald.settings import get_settings

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
    "herald.sweep.escalations": "sweeps",
    # write-back webhooks (herald/writeback.py): their own pool, so a slow receiver never holds a sweep
    "herald.writeback.deliver": "writeback",
    "herald.sweep.writeback": "writeback",
}

RETRY_QUEUE = "retry"

# The ops lane: herald's own operations alerts, through every stage, on one queue of their own.
OPS_QUEUE = "ops"
# The urgent lane: pages, through every stage, on one queue of their own.
URGENT_QUEUE = "urgent"
# The pipeline's tasks: the ones a lane takes off their stage's own queue.
LANE_TASKS: frozenset[str] = frozenset(("herald.ingest", "herald.enrich", "herald.resolve", *DELIVER_ROUTES))

Lane = Literal["bulk", "urgent", "ops"]
# Who raises herald's own operations alerts (an event's ``source``): the sweeps and the delivery worker.
OPS_SOURCES: tuple[str, ...] = ("herald/sweep.", "herald/deliver")


def is_ops(event_type: str, source: str) -> bool:
    """Whether an event rides the ops lane: an ``ops.*`` event herald raised itself.

    Operations events published by integration code (flow 6 from outside) take the bulk lane: a
    flood of them must not hold herald's own alerts.
    """
    return event_type.startswith("ops.") and source.startswith(OPS_SOURCES)


def lane_of(event_type: str, source: str, severity: str) -> Lane:
    """The lane of an event: ops for herald's own alerts, urgent for a page, bulk for the rest.

    ``HERALD_URGENT_LANE=false`` sends pages down the bulk lane (the benchmark's comparison, or a deployment
    that runs no ``urgent`` pool).
    """
    if is_ops(event_type, source):
        return "ops"
    if severity in PAGE_SEVERITIES and get_settings().urgent_lane:
        return "urgent"
    return "bulk"


def queue_for(task: str, lane: Lane = "bulk", *, retry: bool = False) -> str:
    """The queue of one send of ``task`` on ``lane`` (``retry``: a delivery's retry, which keeps its lane)."""
    if task in LANE_TASKS and lane != "bulk":
        return OPS_QUEUE if lane == "ops" else URGENT_QUEUE
    return RETRY_QUEUE if retry else TASK_ROUTES[task]


def task_route(name: str, args: Sequence[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any],
          task: Any = None, **_: Any) -> dict[str, str] | None:
    """Celery's router (``task_routes``): :data:`TASK_ROUTES`, and the lane of an ingest from its envelope.

    A ``queue=`` given to the send wins over this (Celery merges the router's answer under it).
    """
    if name not in TASK_ROUTES:
        return None
    envelope = args[0] if name == "herald.ingest" and args else None
    if not isinstance(envelope, dict):
        return {"queue": queue_for(name)}
    return {"queue": queue_for(name, envelope_lane(envelope))}


def envelope_lane(envelope: dict[str, Any]) -> Lane:
    """The lane of an event not yet validated (an ingest's message): its severity, else its type's default."""
    kind = str(envelope.get("type", ""))
    severity = envelope.get("severity")
    if not isinstance(severity, str):
        known = EVENT_TYPES.get(kind)
        severity = known.severity.value if known is not None else ""
    return lane_of(kind, str(envelope.get("source", "")), severity)


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
    # The urgent lane: pages through every stage. Its own processes, so a page never queues behind bulk work;
    # one message at a time, so a page is never held in a busy process's prefetch. Four: a page's three channel
    # batches go out side by side with a stage of the next page (with two, Web Push waited ~70 ms for a process:
    # bench/RESULTS.md). Its tasks mark Redis while they run, and bulk sends hold meanwhile (herald/urgency.py).
    "urgent": WorkerPool((URGENT_QUEUE,), concurrency=4, prefetch_multiplier=1),
    # Write-back webhooks: each run sends a batch concurrently and waits on receivers; one message at a time.
    "writeback": WorkerPool(("writeback",), concurrency=2, prefetch_multiplier=1),
}

QUEUES: tuple[str, ...] = tuple(dict.fromkeys(q for pool in POOLS.values() for q in pool.queues))

ALL_POOL = "all"


def takes_a_lane(queues: tuple[str, ...]) -> bool:
    """Whether a worker of ``queues`` consumes a lane (urgent, ops): it may hold a page, so it never yields."""
    return bool({URGENT_QUEUE, OPS_QUEUE} & set(queues))


def nice_for(queues: tuple[str, ...]) -> int:
    """How much a worker of ``queues`` yields the CPU: ``HERALD_BULK_NICE`` when it consumes only bulk queues.

    A worker that also consumes a lane (urgent, ops) keeps the normal priority: it may hold a page.
    """
    return 0 if takes_a_lane(queues) else get_settings().bulk_nice


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
