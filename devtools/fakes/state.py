"""What every fake provider shares: its switches and the log of what it saw."""

from __future__ import annotations

import pickle
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SEEN_MAX = 200_000  # a bounded log: a long benchmark never grows the fake without end


@dataclass
class Switches:
    """Behaviour of one fake provider, changeable while it runs (in process or over HTTP)."""

    latency_ms: float = 0.0  # added to every answer
    error_rate: float = 0.0  # fraction of requests answered with the provider's "unavailable"
    dead_tokens: set[str] = field(default_factory=set)  # answered as unregistered / gone
    # token -> the provider's error (an error-table row), optionally "*N" for the next N requests only
    errors: dict[str, str] = field(default_factory=dict)
    throttle: int = 0  # the next N requests get 429 with Retry-After
    retry_after_s: float = 1.0
    outage_until: float = 0.0  # epoch seconds: until then every request gets "unavailable"
    # Faults of one host, by listener name ("fcm", "webpush", "apns" for production, "apns_sandbox"):
    # a hang holds every request that long before answering it (a provider that accepts and stalls);
    # a refused host listens no more and drops its open connections (a provider that is gone).
    hang_s: dict[str, float] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)

    def outage(self, seconds: float) -> None:
        self.outage_until = time.time() + seconds

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key == "outage_s":
                self.outage(float(value))
            elif key in ("dead_tokens", "refused"):
                setattr(self, key, set(value))
            elif hasattr(self, key):
                setattr(self, key, value)
            else:
                raise KeyError(key)

    def as_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "error_rate": self.error_rate,
                "dead_tokens": sorted(self.dead_tokens), "errors": self.errors, "throttle": self.throttle,
                "retry_after_s": self.retry_after_s, "outage_until": self.outage_until,
                "hang_s": self.hang_s, "refused": sorted(self.refused)}


class SeenLog:
    """What a fake accepted, oldest first, at most :data:`SEEN_MAX` entries; reads as a sequence of dicts.

    Each entry is kept pickled: a bytes object is one the garbage collector never walks. Kept as dicts, the
    three providers' 600,000 entries of a benchmark cost every full collection of the fakes' process ~250 ms,
    during which no fake answered: a page sent during a 100,000-device burst took 300 ms where 130 is usual
    (bench/RESULTS.md), a pause no real provider has.
    """

    def __init__(self, maxlen: int = SEEN_MAX) -> None:
        self._entries: deque[bytes] = deque(maxlen=maxlen)

    def append(self, entry: dict[str, Any]) -> None:
        self._entries.append(pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))

    def clear(self) -> None:
        self._entries.clear()

    def since(self, start: int) -> list[dict[str, Any]]:
        """The entries from the ``start``-th on (the fakes' ``/seen`` endpoint pages with it)."""
        return [pickle.loads(b) for b in list(self._entries)[start:]]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.since(0))  # a copy: the fakes' own thread may append meanwhile


@dataclass
class Provider:
    """One fake's state: switches, what it saw, and how many requests it held at once."""

    name: str
    switches: Switches = field(default_factory=Switches)
    seen: SeenLog = field(default_factory=SeenLog)
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0

    def enter(self) -> None:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def forced(self, token: str) -> str | None:
        """The error forced for this token, if any (and count down an "*N" one)."""
        value = self.switches.errors.get(token)
        if value is None:
            return None
        reason, _, times = value.partition("*")
        if times:
            left = int(times) - 1
            if left <= 0:
                del self.switches.errors[token]
            else:
                self.switches.errors[token] = f"{reason}*{left}"
        return reason

    def trouble(self) -> str | None:
        """"outage", "throttle" or "error" when the switches say this request fails that way."""
        s = self.switches
        if s.outage_until > time.time():
            return "outage"
        if s.throttle > 0:
            s.throttle -= 1
            return "throttle"
        if s.error_rate and random.random() < s.error_rate:
            return "error"
        return None

    def record(self, **entry: Any) -> None:
        self.seen.append({"at": time.time(), **entry})

    def reset(self) -> None:
        self.switches = Switches()
        self.seen.clear()
        self.max_in_flight = self.requests = 0  # in_flight stays: requests may be under way
