"""The one routing table: every task's queue, and the worker pools that consume them.

A test fails if a registered task has no route here. Queues are pools: a slow APNs never
starves ingest, and each pool is scaled or restarted alone.
"""

from __future__ import annotations

from dataclasses import dataclass

CHANNELS: tuple[str, ...] = ("fcm", "apns", "webpush")

TASK_ROUTES: dict[str, str] = {
    "herald.ingest": "ingest",
    "herald.enrich": "enrich",
    "herald.resolve": "resolve",
    **{f"herald.deliver.{channel}": f"deliver.{channel}" for channel in CHANNELS},
    "herald.sweep.recover": "sweeps",
    "herald.sweep.outbox": "sweeps",
    # sweeps (schedules/tasks.py)
    "herald.sweep.credentials": "sweeps",
    "herald.sweep.backlog": "sweeps",
    "herald.sweep.due": "sweeps",
    "herald.sweep.purge": "sweeps",
}

RETRY_QUEUE = "retry"


@dataclass(frozen=True)
class Pool:
    """How one pool is started by default (``herald worker --pool NAME`` can override)."""

    queues: tuple[str, ...]
    concurrency: int
    prefetch_multiplier: int
    kind: str = "prefork"


POOLS: dict[str, Pool] = {
    # Short tasks: a little prefetch keeps the process busy between round trips.
    "ingest": Pool(("ingest",), concurrency=2, prefetch_multiplier=8),
    "enrich": Pool(("enrich",), concurrency=2, prefetch_multiplier=8),
    # One event fans out to many rows: take one at a time so a big event does not hold others.
    "resolve": Pool(("resolve",), concurrency=2, prefetch_multiplier=1),
    # A batch holds up to HERALD_BATCH_SIZE targets and waits on the network: one at a time.
    **{f"deliver.{c}": Pool((f"deliver.{c}",), concurrency=2, prefetch_multiplier=1) for c in CHANNELS},
    RETRY_QUEUE: Pool((RETRY_QUEUE,), concurrency=1, prefetch_multiplier=1),
    "sweeps": Pool(("sweeps",), concurrency=1, prefetch_multiplier=1),
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
