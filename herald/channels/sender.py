"""The part every provider channel shares: concurrent sends through the provider's gate.

A channel module (fcm, apns, webpush) only knows how to send one message and how to read the
provider's answer (its error table, as data). This module runs a batch of them concurrently on
the process's delivery loop, within the shared limit, honours a provider-wide Retry-After,
stops sending to a host that looks down (the rest is deferred, not failed), feeds that host's
circuit breaker and raises one operations event when herald's own credentials are refused.

Circuits are per provider host (:meth:`ProviderChannel.host`): APNs production down and sandbox
up is one open circuit and one closed one. While a host's circuit is half-open, one of its targets
is sent alone as the probe, the one with the fewest attempts; if the host does not answer, the
probe is recorded but not counted as that target's attempt.

What a provider answered is stored cut to :data:`MAX_ANSWER_CHARS`, without control characters
(:func:`provider_text`): an answer is foreign text that ``herald events show`` prints.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from herald import urgency
from herald.channels import runtime
from herald.channels.gate import Gate, Lease, make_gate
from herald.channels.types import Message, Outcome, Result
from herald.events import PAGE_SEVERITIES

log = logging.getLogger(__name__)

CHUNK = 64  # slots asked for at once: one Redis round trip per CHUNK requests
MAX_WAIT_S = 1.0  # wait this long inside a batch for slots; past it the rest is deferred
MAX_ANSWER_CHARS = 300  # of a provider's answer (body, reason, error) kept in a result
MAX_STATUS_CHARS = 64  # delivery_attempts.provider_status
MAX_REASON_CHARS = 500  # delivery_attempts.reason is 512


@dataclass(frozen=True)
class Rule:
    """What herald does with one kind of provider answer (one row of a channel's error table)."""

    outcome: Outcome
    why: str
    min_retry_after_s: float | None = None  # e.g. FCM QUOTA_EXCEEDED: at least a minute
    provider_wide: bool = False  # the wait applies to every request to this provider
    fresh_connection: bool = False  # APNs 500/503: retry on a new connection


def is_down(result: Result) -> bool:
    """A transport failure, no answer, or a 5xx: evidence that the provider itself is unavailable."""
    return result.outcome in ("transient", "uncertain") and (result.provider_status is None
                                                             or result.provider_status.startswith("5"))


def provider_text(value: str | bytes | None, limit: int = MAX_ANSWER_CHARS) -> str:
    """Foreign text (a provider's answer, an error message) as herald stores it: one line, cut."""
    if value is None:
        return ""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    text = "".join(c if c.isprintable() else " " for c in text[:limit * 2]).strip()
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def apply_rule(rule: Rule, delivery_id: int, status: str, detail: str, latency_ms: int,
               retry_after_s: float | None) -> Result:
    wait = retry_after_s
    if rule.min_retry_after_s is not None:
        wait = max(wait or 0.0, rule.min_retry_after_s)
    return Result(delivery_id, rule.outcome, provider_text(status, MAX_STATUS_CHARS),
                  provider_text(f"{provider_text(detail)} ({rule.why})", MAX_REASON_CHARS), latency_ms,
                  wait if rule.outcome == "transient" else None)


def connection_failed(delivery_id: int, exc: BaseException, started: float, *, sent: bool = False) -> Result:
    """A request that got no answer: evidence that the host is down.

    ``sent``: the request was written before the failure (a timeout waiting for the answer, the
    connection lost after sending), so the provider may have delivered it: ``uncertain``. A request
    that never left (refused, DNS, connect timeout) is ``transient``: resending it is harmless.
    """
    detail = f"{type(exc).__name__}: {provider_text(str(exc))}"
    if sent:
        return with_latency(Result(delivery_id, "uncertain", None,
                                   f"no answer after the request was sent, it may have been delivered: {detail}"),
                            started)
    return with_latency(Result(delivery_id, "transient", None, f"connection: {detail}"), started)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), RFC 9110 section 10.2.3."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@dataclass(eq=False)
class _Host:
    """One provider host within a batch: its messages, its probe and what it answered."""

    messages: list[Message] = field(default_factory=list)
    probe: Message | None = None
    answered: int = 0
    down: int = 0
    down_run: int = 0
    stopped: bool = False  # no more requests to this host in this batch
    wait_s: float | None = None  # the deferred targets' wait, when something else than its circuit decides
    open_s: float = 0.0

    def count(self, message: Message, result: Result, threshold: int) -> Result:
        """Count one result: ``threshold`` "down" answers in a row stop the host, and so does its probe
        getting none (that result is marked as the probe, not counted as the target's attempt)."""
        if not is_down(result):
            if result.outcome != "deferred":
                self.answered += 1
                self.down_run = 0
            return result
        self.down += 1
        self.down_run += 1
        if message is self.probe:
            self.stopped = True
            return replace(result, probe=True, reason=provider_text(
                f"circuit probe, not counted as an attempt: {result.reason}", MAX_REASON_CHARS))
        if self.down_run >= threshold:
            self.stopped = True
        return result


@dataclass(eq=False)
class _Batch:
    """One :meth:`ProviderChannel.send_all` call: its messages by provider host, and the results so far."""

    host_name: Callable[[Message], str]
    hosts: dict[str, _Host] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)

    @classmethod
    def of(cls, messages: list[Message], host_name: Callable[[Message], str]) -> _Batch:
        batch = cls(host_name)
        for message in messages:
            batch.hosts.setdefault(host_name(message), _Host()).messages.append(message)
        return batch

    def host(self, message: Message) -> _Host:
        return self.hosts[self.host_name(message)]

    def sendable(self, messages: list[Message]) -> list[Message]:
        """The messages whose host is not stopped."""
        return [m for m in messages if not self.host(m).stopped]

    def stop_all(self, wait_s: float) -> None:
        """The provider asked every request to wait (a provider-wide Retry-After)."""
        for host in self.hosts.values():
            host.stopped, host.wait_s = True, wait_s

    def stop(self, messages: list[Message], wait_s: float) -> None:
        """No slot within :data:`MAX_WAIT_S`: these messages' hosts stop, their targets wait ``wait_s``."""
        for message in messages:
            host = self.host(message)
            host.stopped = True
            host.wait_s = wait_s if host.wait_s is None else max(host.wait_s, wait_s)


class ProviderChannel:
    """Base of the provider channels: ``send`` is the channel interface, ``send_one`` the provider's."""

    name: str = ""

    def __init__(self) -> None:
        from herald.channels.registry import get

        self.gate: Gate = make_gate(self.name, get(self.name).limits())
        self._last_alert = 0.0

    # --- to implement per provider -------------------------------------------------------

    async def open(self) -> None:
        """Create clients and connections on the delivery loop (after fork, on first use)."""

    async def aclose(self) -> None:
        """Close clients and connections."""

    async def send_one(self, message: Message) -> tuple[Result, Rule | None]:
        """Send one message; return its result and the table row that decided it (None for sent)."""
        raise NotImplementedError

    # --- the shared part -----------------------------------------------------------------

    def close(self) -> None:
        runtime.run(self.aclose(), timeout_s=10)

    def host(self, message: Message) -> str:
        """The provider host a message goes to: the name of its circuit."""
        return self.name

    def send(self, messages: list[Message]) -> list[Result]:
        results = runtime.run(self.send_all(messages))
        auth = [r for r in results if r.outcome == "auth"]
        if auth:
            self.alert_auth(auth[0].reason or "credentials refused", len(auth))
        return results

    async def send_all(self, messages: list[Message]) -> list[Result]:
        """Send in two waves: the hosts whose circuit lets them (one probe alone for a half-open one),
        then the rest of a probed host that answered, and what waited for slots; defer the unsent."""
        await self.open()
        batch = _Batch.of(messages, self.host)
        unsent = await self._send_wave(self._check_circuits(batch), batch)
        unsent += self._after_probes(batch)
        await self._send_wave(batch.sendable(unsent), batch)
        done = {r.delivery_id for r in batch.results}
        self._report_circuits(batch, done)
        self._wait_out_probes(batch, messages)
        return batch.results + self._defer_unsent(batch, messages, done)

    def _check_circuits(self, batch: _Batch) -> list[Message]:
        """Ask each host's circuit; returns the first wave (an open host's targets are deferred)."""
        first: list[Message] = []
        for name, host in batch.hosts.items():
            circuit = self.gate.check(name)
            if circuit.state == "open":
                host.stopped, host.wait_s = True, max(circuit.wait_s, 0.2)
            elif circuit.state == "probe":
                # Half-open: one target alone, the one with the fewest attempts (never always the same one).
                host.probe = min(host.messages, key=lambda m: (m.target.attempt, random.random()))
                first.append(host.probe)
            else:
                first.extend(host.messages)
        return first

    @staticmethod
    def _after_probes(batch: _Batch) -> list[Message]:
        """The rest of each probed host whose probe was answered."""
        return [m for host in batch.hosts.values() if host.probe is not None and not host.stopped
                for m in host.messages if m is not host.probe]

    def _report_circuits(self, batch: _Batch, done: set[int]) -> None:
        """Tell each host's circuit what it answered (an unsent probe hands the probe to another batch)."""
        for name, host in batch.hosts.items():
            if host.probe is not None and host.probe.target.delivery_id not in done:
                self.gate.release_probe(name)  # no slot for the probe: another batch probes
            elif host.answered or host.down or host.probe is not None:
                host.open_s = self.gate.report(name, answered=host.answered, down=host.down,
                                               probe=host.probe is not None)

    @staticmethod
    def _wait_out_probes(batch: _Batch, messages: list[Message]) -> None:
        """An unanswered probe is pending again once the circuit's next open period is over."""
        by_id = {m.target.delivery_id: m for m in messages}
        for i, result in enumerate(batch.results):
            if result.probe:
                open_s = batch.host(by_id[result.delivery_id]).open_s
                batch.results[i] = replace(result, retry_after_s=max(open_s, 1.0))

    def _defer_unsent(self, batch: _Batch, messages: list[Message], done: set[int]) -> list[Result]:
        """Never sent: back to pending without spending an attempt."""
        deferred = []
        for message in messages:
            if message.target.delivery_id in done:
                continue
            host = batch.host(message)
            wait = host.wait_s if host.wait_s is not None else max(host.open_s, 1.0)
            deferred.append(Result(message.target.delivery_id, "deferred", None,
                                   f"not sent: {self.name} asked to wait or looks down", None, wait))
        return deferred

    async def _send_wave(self, messages: list[Message], batch: _Batch) -> list[Message]:
        """Send concurrently within the gate's limit, a lease of slots per lane; returns what was left
        unsent (its host stopped, or no slot within :data:`MAX_WAIT_S`)."""
        lanes: list[asyncio.Task[None]] = []
        queue = list(messages)
        page = any(m.severity in PAGE_SEVERITIES for m in messages)  # a batch holds one event: one severity
        marks = None if page else urgency.marks()
        yielded = 0.0
        index = 0
        while index < len(queue):
            queue[index:] = batch.sendable(queue[index:])
            if index >= len(queue):
                break
            if marks is not None and yielded < urgency.BUDGET_S and marks.busy():
                await asyncio.sleep(urgency.STEP_S)  # a page is in flight: bulk steps aside (herald/urgency.py)
                yielded += urgency.STEP_S
                continue
            lease, wait_s = self.gate.acquire(min(CHUNK, len(queue) - index), page=page)
            if lease is None:
                if wait_s > MAX_WAIT_S:
                    batch.stop(queue[index:], wait_s)
                    break
                await asyncio.sleep(wait_s)
                continue
            chunk = queue[index:index + lease.count]
            index += len(chunk)
            lanes.append(asyncio.create_task(self._send_lane(chunk, lease, batch)))
            await asyncio.sleep(0)  # let the lane start before asking for the next lease
        if lanes:
            await asyncio.gather(*lanes)
        return queue[index:]

    async def _send_lane(self, chunk: list[Message], lease: Lease, batch: _Batch) -> None:
        try:
            await asyncio.gather(*(self._send_counted(m, batch) for m in chunk))
        finally:
            self.gate.release(lease)

    async def _send_counted(self, message: Message, batch: _Batch) -> None:
        """Send one message, count its result against its host, honour a provider-wide wait."""
        host = batch.host(message)
        result, rule = await self._send_guarded(message)
        result = host.count(message, result, self.gate.circuit_failures)
        batch.results.append(result)
        if rule is not None and rule.provider_wide and result.retry_after_s:
            self.gate.block_for(result.retry_after_s)
            batch.stop_all(result.retry_after_s)

    async def _send_guarded(self, message: Message) -> tuple[Result, Rule | None]:
        """:meth:`send_one`, with herald's own error as a transient result: one bad target never fails
        the batch."""
        try:
            return await self.send_one(message)
        except Exception as exc:
            log.exception("%s: unexpected error sending delivery %s", self.name, message.target.delivery_id)
            return Result(message.target.delivery_id, "transient", None,
                          f"herald error: {type(exc).__name__}: {provider_text(str(exc))}"), None

    def alert_auth(self, reason: str, count: int) -> None:
        """Raise one ``ops.processing_delayed`` event through herald itself (tokens are kept)."""
        from herald.settings import get_settings

        interval = get_settings().channel_auth_alert_interval_s
        now = time.time()
        if now - self._last_alert < interval:
            return
        self._last_alert = now
        try:
            from herald.events import make_event
            from herald.publishing import publish

            bucket = int(now // interval)
            publish(make_event("ops.processing_delayed",
                               {"resource": f"push:{self.name}", "metric": "auth_error", "value": count,
                                "threshold": 0},
                               environment="prod", idempotency_key=f"herald-auth-{self.name}-{bucket}",
                               source="herald/deliver"))
            log.error("%s refused herald's credentials (%d targets): %s", self.name, count, reason)
        except Exception:  # the alert must never fail the batch it reports on
            log.exception("could not publish the auth alert for %s", self.name)


def with_latency(result: Result, started: float) -> Result:
    return replace(result, latency_ms=int((time.perf_counter() - started) * 1000))
