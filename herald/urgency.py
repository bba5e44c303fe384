"""Bulk work yields to a page in flight: the urgent lane's marks, shared through Redis.

The urgent lane (herald/lanes.py) gives pages their own queue and processes, but not their own CPU, database
or provider: on a host running a burst, a page's stages still share those with the burst's sends. So while
a page moves, bulk sending steps aside:

- each deliver batch of a page (a task with ``page_stage``, taken from the urgent queue) puts a mark in a
  sorted set in Redis when it starts (member: the task id, score: when the mark lapses by itself,
  :data:`SAFETY_MS` on, so a killed process cannot leave one) and, when it ends, shortens it to
  :data:`GRACE_MS` from then. Only the deliver batches mark: the page's earlier stages are short and the
  burst's own fan-out chunks (below) already yield to them; marking from the page's resolve on held the burst
  ~0.45 s per page and cost it 15% of its throughput at 100,000 devices, marking every stage 13%, for no
  steadier page latency (bench/RESULTS.md);
- a bulk deliver batch, before each lease of provider slots (herald/channels/sender.py), asks
  :meth:`Marks.busy`; while a mark stands it waits in steps of :data:`STEP_S`, at most
  :data:`BUDGET_S` per batch, so pages arriving without end slow bulk work but never stop it.

Times are Redis's own clock (every machine agrees on it). Without Redis (the embedded default: one host, one
lane) there are no marks and nothing yields. Off unless ``HERALD_BULK_YIELD=true``: where bulk and urgent
workers share a host, a bulk worker's niceness (cli/workers.py ``yield_cpu``) gives a page more for less of the
burst's throughput (bench/RESULTS.md); the marks serve pools on separate hosts that share a provider.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

from herald.settings import get_settings

log = logging.getLogger(__name__)

SAFETY_MS = 30_000  # a mark whose task never ended (its process killed) lapses after this
GRACE_MS = 50  # after a page's batch ends: its other channels' batches are starting or running
STEP_S = 0.02  # a yielding bulk batch looks again this often
BUDGET_S = 2.0  # a bulk batch yields at most this long in all: pages slow a burst, never stop it

# KEYS: marks. ARGV: member, ms from now. Sets the member's lapse time, and drops lapsed members.
_MARK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return 1
"""

# KEYS: marks. Returns how many marks stand now.
_BUSY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], now + 1, '+inf')
"""


class Marks:
    """The urgent lane's marks in Redis, as one process sees them."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 0.5) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.key = f"{prefix}herald:urgent:marks"
        self._mark = self.redis.register_script(_MARK)
        self._busy = self.redis.register_script(_BUSY)

    def started(self, task_id: str) -> None:
        self._call(self._mark, task_id, SAFETY_MS)

    def finished(self, task_id: str) -> None:
        self._call(self._mark, task_id, GRACE_MS)

    def busy(self) -> bool:
        """Whether a page is in flight (a mark stands). False when Redis does not answer: bulk goes on."""
        return bool(self._call(self._busy))

    def _call(self, script: Any, *args: Any) -> Any:
        # A mark is an optimisation: Redis unreachable must never fail a page's task nor stop a burst.
        try:
            return script(keys=[self.key], args=list(args))
        except Exception as exc:  # noqa: BLE001 - redis raises many kinds; none may escape
            log.debug("urgent marks: %r", exc)
            return 0


@lru_cache(maxsize=1)
def marks() -> Marks | None:
    """This process's marks, when the broker is Redis and ``HERALD_BULK_YIELD`` is on; else None."""
    settings = get_settings()
    broker = settings.broker_url or ""
    if not settings.bulk_yield or not broker.startswith(("redis://", "rediss://", "unix://")):
        return None
    return Marks(broker, settings.broker_key_prefix)


def hold(budget_s: float = BUDGET_S) -> float:
    """For bulk work outside a delivery loop (a fan-out's next chunk): wait while a page is in flight, at most
    ``budget_s``. Returns the seconds held."""
    current = marks()
    held = 0.0
    while current is not None and held < budget_s and current.busy():
        time.sleep(STEP_S)
        held += STEP_S
    return held
