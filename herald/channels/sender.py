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
from dataclasses import dataclass, field, replace

from herald.channels import runtime
from herald.channels.gate import Gate, make_gate
from herald.channels.types import Message, Outcome, Result

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
        await self.open()
        results: list[Result] = []
        hosts: dict[str, _Host] = {}
        for message in messages:
            hosts.setdefault(self.host(message), _Host()).messages.append(message)
        first: list[Message] = []
        for name, host in hosts.items():
            circuit = self.gate.check(name)
            if circuit.state == "open":
                host.stopped, host.wait_s = True, max(circuit.wait_s, 0.2)
                continue
            if circuit.state == "probe":
                # Half-open: one target alone, the one with the fewest attempts (never always the same one).
                host.probe = min(host.messages, key=lambda m: (m.target.attempt, random.random()))
                first.append(host.probe)
            else:
                first.extend(host.messages)
        pending = await self._send_wave(first, hosts, results)
        for host in hosts.values():
            if host.probe is not None and not host.stopped:
                pending.extend(m for m in host.messages if m is not host.probe)
        pending += await self._send_wave([m for m in pending if not hosts[self.host(m)].stopped], hosts, results)
        done = {r.delivery_id for r in results}
        for name, host in hosts.items():
            if host.probe is not None and host.probe.target.delivery_id not in done:
                self.gate.release_probe(name)  # no slot for the probe: another batch probes
            elif host.answered or host.down or host.probe is not None:
                host.open_s = self.gate.report(name, answered=host.answered, down=host.down,
                                               probe=host.probe is not None)
        by_id = {m.target.delivery_id: m for m in messages}
        for i, result in enumerate(results):
            if result.probe:  # pending again once the circuit's next open period is over
                results[i] = replace(result, retry_after_s=max(hosts[self.host(by_id[result.delivery_id])].open_s, 1.0))
        for message in messages:
            if message.target.delivery_id in done:
                continue
            # Never sent: back to pending without spending an attempt.
            host = hosts[self.host(message)]
            wait = host.wait_s if host.wait_s is not None else max(host.open_s, 1.0)
            results.append(Result(message.target.delivery_id, "deferred", None,
                                  f"not sent: {self.name} asked to wait or looks down", None, wait))
        return results

    async def _send_wave(self, messages: list[Message], hosts: dict[str, _Host], results: list[Result]
                         ) -> list[Message]:
        """Send concurrently within the gate's limit; returns what was left unsent (a wait too long)."""
        threshold = self.gate.circuit_failures

        async def one(message: Message) -> None:
            host = hosts[self.host(message)]
            try:
                result, rule = await self.send_one(message)
            except Exception as exc:  # noqa: BLE001 - one bad target never fails the batch
                log.exception("%s: unexpected error sending delivery %s", self.name, message.target.delivery_id)
                result, rule = Result(message.target.delivery_id, "transient", None,
                                      f"herald error: {type(exc).__name__}: {provider_text(str(exc))}"), None
            if is_down(result):
                host.down += 1
                host.down_run += 1
                if message is host.probe:
                    host.stopped = True
                    result = replace(result, probe=True, reason=provider_text(
                        f"circuit probe, not counted as an attempt: {result.reason}", MAX_REASON_CHARS))
                elif host.down_run >= threshold:
                    host.stopped = True
            elif result.outcome != "deferred":
                host.answered += 1
                host.down_run = 0
            results.append(result)
            if rule is not None and rule.provider_wide and result.retry_after_s:
                self.gate.block_for(result.retry_after_s)
                for h in hosts.values():
                    h.stopped, h.wait_s = True, result.retry_after_s

        async def lane(chunk: list[Message], lease: object) -> None:
            try:
                await asyncio.gather(*(one(m) for m in chunk))
            finally:
                self.gate.release(lease)  # type: ignore[arg-type]

        lanes: list[asyncio.Task[None]] = []
        queue = list(messages)
        index = 0
        while index < len(queue):
            queue[index:] = [m for m in queue[index:] if not hosts[self.host(m)].stopped]
            if index >= len(queue):
                break
            lease, wait_s = self.gate.acquire(min(CHUNK, len(queue) - index))
            if lease is None:
                if wait_s > MAX_WAIT_S:
                    for message in queue[index:]:
                        host = hosts[self.host(message)]
                        host.stopped = True
                        host.wait_s = wait_s if host.wait_s is None else max(host.wait_s, wait_s)
                    break
                await asyncio.sleep(wait_s)
                continue
            chunk = queue[index:index + lease.count]
            index += len(chunk)
            lanes.append(asyncio.create_task(lane(chunk, lease)))
            await asyncio.sleep(0)  # let the lane start before asking for the next lease
        if lanes:
            await asyncio.gather(*lanes)
        return queue[index:]

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
        except Exception:  # noqa: BLE001 - the alert must never fail the batch it reports on
            log.exception("could not publish the auth alert for %s", self.name)


def with_latency(result: Result, started: float) -> Result:
    return replace(result, latency_ms=int((time.perf_counter() - started) * 1000))
