"""What stands between herald and one provider: a shared limit, Retry-After, a circuit breaker.

Every worker process of every machine sees the same state when the broker is Redis: the keys
live there (under the broker's key prefix), so a fleet together respects one project quota,
one in-flight limit and one "wait until" a provider asked for. The embedded default has no
Redis: the same rules then hold per process (:class:`LocalState`).

- **Limit**: a lease of up to N request slots is taken before N requests go out and returned
  after; a lease expires by itself so a worker killed with SIGKILL cannot leak slots. An optional
  per-second rate is a fixed one-second window counted in the same call.
- **Retry-After**: a provider-wide "not before" time (FCM QUOTA_EXCEEDED applies to the whole
  project); no request leaves before it.
- **Circuit**, one per provider host (APNs sandbox and production are two; each Web Push service
  is one): consecutive "host down" answers (connection errors, timeouts, 5xx), none of them further
  than a window apart (a quiet host's failures of last week do not add up with today's), open it; while open,
  that host's targets are not sent (they keep their attempts); when the open period ends one
  process sends one probe request; any answer from the host closes it, none reopens it for twice
  as long (bounded). An answer from one host never closes another host's circuit.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from herald.channels.spec import Limits

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0  # longer than any batch's slowest request (channel_timeout_s, with retries)

# KEYS: leases zset (lease -> expiry ms), lease sizes hash, rate window prefix, block key
# ARGV: want, max_in_flight, rate_per_s, lease id, lease ttl ms
# Returns {granted, wait_ms}. Redis's own clock: every machine agrees on it.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = tonumber(redis.call('GET', KEYS[4]) or '0')
if blocked > now then return {0, blocked - now} end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, lease in ipairs(expired) do redis.call('HDEL', KEYS[2], lease) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
local used = 0
for _, n in ipairs(redis.call('HVALS', KEYS[2])) do used = used + tonumber(n) end
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if grant <= 0 then return {0, 5} end
local rate = tonumber(ARGV[3])
local window = KEYS[3] .. math.floor(now / 1000)
if rate > 0 then
  grant = math.min(grant, rate - tonumber(redis.call('GET', window) or '0'))
  -- this second's budget is spent: wait for the next one
  if grant <= 0 then return {0, 1000 - (now % 1000)} end
end
if rate > 0 then
  redis.call('INCRBY', window, grant)
  redis.call('PEXPIRE', window, 2000)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], grant)
return {grant, 0}
"""

# KEYS: open_until, probe lock. ARGV: probe ttl ms. Returns {state, wait_ms}: 0 closed, 1 open, 2 probe.
_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('GET', KEYS[1]) or '0')
if open_until == 0 then return {0, 0} end
if open_until > now then return {1, open_until - now} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return {2, 0} end
return {1, 1000}
"""

# KEYS: failures, open_until, open period, probe lock.
# ARGV: threshold, base ms, max ms, probe(0/1), failures, window ms (the failures count is forgotten after it).
_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fails = redis.call('INCRBY', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if fails < tonumber(ARGV[1]) and ARGV[4] == '0' then return 0 end
local period = tonumber(redis.call('GET', KEYS[3]) or '0')
if period == 0 then period = tonumber(ARGV[2]) else period = math.min(period * 2, tonumber(ARGV[3])) end
redis.call('SET', KEYS[3], period)
redis.call('SET', KEYS[2], now + period)
redis.call('DEL', KEYS[4])
return period
"""


@dataclass(frozen=True)
class Lease:
    id: str
    count: int


@dataclass(frozen=True)
class Circuit:
    state: str  # closed, open, probe
    wait_s: float = 0.0


class State(Protocol):
    """Where the gate keeps its counters: Redis (shared) or this process. ``host``: a circuit's name."""

    def acquire(self, want: int, max_in_flight: int, rate_per_s: int) -> tuple[Lease | None, float]: ...
    def release(self, lease: Lease) -> None: ...
    def block(self, until_s: float) -> None: ...
    def check(self, host: str) -> Circuit: ...
    def succeeded(self, host: str) -> None: ...
    def failed(self, host: str, count: int, *, probe: bool) -> float: ...
    def release_probe(self, host: str) -> None: ...


class RedisState:
    """The gate's state in Redis, shared by every process on the same broker."""

    def __init__(self, url: str, prefix: str, provider: str, threshold: int, open_s: float,
                 max_open_s: float, failure_window_s: float = 60.0, timeout_s: float = 2.0) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        base = f"{prefix}herald:gate:{provider}:"
        self.base = base
        self.k_leases, self.k_sizes, self.k_rate = base + "leases", base + "sizes", base + "rate:"
        self.k_block = base + "block"
        self.threshold, self.open_ms, self.max_open_ms = threshold, int(open_s * 1000), int(max_open_s * 1000)
        self.failure_window_ms = max(1, int(failure_window_s * 1000))
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._check = self.redis.register_script(_CHECK)
        self._failed = self.redis.register_script(_FAILED)

    def acquire(self, want: int, max_in_flight: int, rate_per_s: int) -> tuple[Lease | None, float]:
        lease_id = uuid.uuid4().hex
        granted, wait_ms = self._acquire(
            keys=[self.k_leases, self.k_sizes, self.k_rate, self.k_block],
            args=[want, max_in_flight, rate_per_s, lease_id, int(LEASE_TTL_S * 1000)])
        if int(granted) > 0:
            return Lease(lease_id, int(granted)), 0.0
        return None, int(wait_ms) / 1000

    def release(self, lease: Lease) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.k_leases, lease.id)
        pipe.hdel(self.k_sizes, lease.id)
        pipe.execute()

    def block(self, until_s: float) -> None:
        # Keep the later of two "not before" times (two processes may be told different ones).
        until_ms = int(until_s * 1000)
        current = int(self.redis.get(self.k_block) or 0)  # type: ignore[arg-type]
        if until_ms > current:
            self.redis.set(self.k_block, until_ms, px=max(1, until_ms - int(time.time() * 1000)) + 1000)

    def _circuit(self, host: str) -> dict[str, str]:
        base = f"{self.base}circuit:{host}:"
        return {name: base + name for name in ("open_until", "probe", "fails", "period")}

    def check(self, host: str) -> Circuit:
        k = self._circuit(host)
        state, wait_ms = self._check(keys=[k["open_until"], k["probe"]], args=[int(LEASE_TTL_S * 1000)])
        return Circuit(("closed", "open", "probe")[int(state)], int(wait_ms) / 1000)

    def succeeded(self, host: str) -> None:
        self.redis.delete(*self._circuit(host).values())

    def release_probe(self, host: str) -> None:
        self.redis.delete(self._circuit(host)["probe"])

    def failed(self, host: str, count: int, *, probe: bool) -> float:
        k = self._circuit(host)
        period = self._failed(keys=[k["fails"], k["open_until"], k["period"], k["probe"]],
                              args=[self.threshold, self.open_ms, self.max_open_ms, int(probe), count,
                                    self.failure_window_ms])
        return int(period) / 1000


@dataclass
class _LocalCircuit:
    open_until: float = 0.0
    period: float = 0.0
    fails: int = 0
    failed_at: float = 0.0  # the last failure counted in ``fails``
    probing: bool = False


class LocalState:
    """The same rules inside one process (the embedded default has no Redis)."""

    def __init__(self, threshold: int, open_s: float, max_open_s: float, failure_window_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # seconds since the epoch; a test passes its own
        self.lock = threading.Lock()
        self.in_flight = 0
        self.window, self.window_used = 0, 0
        self.blocked_until = 0.0
        self.circuits: dict[str, _LocalCircuit] = {}
        self.threshold, self.open_s, self.max_open_s = threshold, open_s, max_open_s
        self.failure_window_s = failure_window_s

    def acquire(self, want: int, max_in_flight: int, rate_per_s: int) -> tuple[Lease | None, float]:
        now = self.clock()
        with self.lock:
            if self.blocked_until > now:
                return None, self.blocked_until - now
            grant = min(want, max_in_flight - self.in_flight)
            if grant <= 0:
                return None, 0.005  # every slot busy: one frees within a request's time
            if rate_per_s > 0:
                if int(now) != self.window:
                    self.window, self.window_used = int(now), 0
                grant = min(grant, rate_per_s - self.window_used)
                if grant <= 0:
                    return None, 1 - now % 1  # this second's budget is spent
            self.in_flight += grant
            if rate_per_s > 0:
                self.window_used += grant
            return Lease(uuid.uuid4().hex, grant), 0.0

    def release(self, lease: Lease) -> None:
        with self.lock:
            self.in_flight -= lease.count

    def block(self, until_s: float) -> None:
        with self.lock:
            self.blocked_until = max(self.blocked_until, until_s)

    def check(self, host: str) -> Circuit:
        now = self.clock()
        with self.lock:
            c = self.circuits.setdefault(host, _LocalCircuit())
            if not c.open_until:
                return Circuit("closed")
            if c.open_until > now:
                return Circuit("open", c.open_until - now)
            if not c.probing:
                c.probing = True
                return Circuit("probe")
            return Circuit("open", 1.0)

    def succeeded(self, host: str) -> None:
        with self.lock:
            self.circuits.pop(host, None)

    def release_probe(self, host: str) -> None:
        with self.lock:
            self.circuits.setdefault(host, _LocalCircuit()).probing = False

    def failed(self, host: str, count: int, *, probe: bool) -> float:
        with self.lock:
            c = self.circuits.setdefault(host, _LocalCircuit())
            now = self.clock()
            if now - c.failed_at > self.failure_window_s:  # the last failure is too long ago to count with this one
                c.fails = 0
            c.fails, c.failed_at = c.fails + count, now
            if c.fails < self.threshold and not probe:
                return 0.0
            c.period = self.open_s if not c.period else min(c.period * 2, self.max_open_s)
            c.open_until = now + c.period
            c.probing = False
            return c.period


class Gate:
    """One provider's gate, as seen by one process."""

    def __init__(self, provider: str, state: State, max_in_flight: int, rate_per_s: int,
                 circuit_failures: int, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.provider = provider
        self.state = state
        self.max_in_flight = max_in_flight
        self.rate_per_s = rate_per_s
        self.circuit_failures = circuit_failures

    def acquire(self, want: int, *, page: bool = False) -> tuple[Lease | None, float]:
        """Up to ``want`` request slots now, or (None, seconds to wait).

        A tenth of the in-flight limit is kept for pages: a burst of bulk work fills the rest and no more, so a
        page sent during it takes a slot at once instead of waiting for the burst's requests to come back.
        """
        limit = self.max_in_flight if page else self.max_in_flight - self.page_reserve
        return self.state.acquire(want, limit, self.rate_per_s)

    @property
    def page_reserve(self) -> int:
        return self.max_in_flight // 10 if self.max_in_flight >= 10 else 0

    def release(self, lease: Lease) -> None:
        self.state.release(lease)

    def block_for(self, seconds: float) -> None:
        """No request to this provider for ``seconds`` (its Retry-After), from any process."""
        log.warning("%s asked herald to wait %.1fs", self.provider, seconds)
        self.state.block(self.clock() + seconds)

    def check(self, host: str) -> Circuit:
        """The circuit of one provider host: closed, open (with seconds left) or probe (this caller probes)."""
        return self.state.check(host)

    def release_probe(self, host: str) -> None:
        self.state.release_probe(host)

    def report(self, host: str, *, answered: int, down: int, probe: bool) -> float:
        """After sending to ``host``: any answer from it closes its circuit; "down" results count
        towards opening it (a failed probe reopens it at once). Returns the open period, or 0."""
        if answered:
            if probe:
                log.warning("%s %s answers again: circuit closed", self.provider, host)
            self.state.succeeded(host)
            return 0.0
        if down or probe:
            period = self.state.failed(host, max(down, 1), probe=probe)
            if period:
                log.warning("%s %s looks down: circuit open for %.1fs", self.provider, host, period)
            return period
        return 0.0


def make_gate(provider: str, limits: Limits) -> Gate:
    """The gate of a provider, on Redis when the broker is Redis, else per process."""
    from herald.settings import get_settings

    settings = get_settings()
    broker = settings.broker_url or ""
    threshold = settings.channel_circuit_failures
    state: Any
    if broker.startswith(("redis://", "rediss://", "unix://")):
        state = RedisState(broker, settings.broker_key_prefix, provider, threshold,
                           settings.channel_circuit_open_s, settings.channel_circuit_max_open_s,
                           settings.channel_circuit_window_s)
    else:
        state = LocalState(threshold, settings.channel_circuit_open_s, settings.channel_circuit_max_open_s,
                           settings.channel_circuit_window_s)
    return Gate(provider, state, limits.max_in_flight, limits.rate_per_s, threshold)
