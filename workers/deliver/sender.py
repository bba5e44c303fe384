"""The part every provider channel shares: concurrent sends through the provider's gate.

A channel module (fcm, apns, webpush) only knows how to send one message and how to read the
provider's answer (its error table, as data). This module runs a batch of them concurrently on
the process's delivery loop, within the shared limit, honours a provider-wide Retry-After,
stops a batch early when the provider looks down (the rest is deferred, not failed), feeds the
circuit breaker and raises one operations event when herald's own credentials are refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from workers.deliver import runtime
from workers.deliver.base import Message, Outcome, Result
from workers.deliver.gate import Gate, make_gate

log = logging.getLogger(__name__)

CHUNK = 64  # slots asked for at once: one Redis round trip per CHUNK requests
MAX_WAIT_S = 1.0  # wait this long inside a batch for slots; past it the rest is deferred


@dataclass(frozen=True)
class Rule:
    """What herald does with one kind of provider answer (one row of a channel's error table)."""

    outcome: Outcome
    why: str
    min_retry_after_s: float | None = None  # e.g. FCM QUOTA_EXCEEDED: at least a minute
    provider_wide: bool = False  # the wait applies to every request to this provider
    fresh_connection: bool = False  # APNs 500/503: retry on a new connection


def is_down(result: Result) -> bool:
    """A transport failure or a 5xx: evidence that the provider itself is unavailable."""
    return result.outcome == "transient" and (result.provider_status is None
                                              or result.provider_status.startswith("5"))


def apply_rule(rule: Rule, delivery_id: int, status: str, detail: str, latency_ms: int,
               retry_after_s: float | None) -> Result:
    wait = retry_after_s
    if rule.min_retry_after_s is not None:
        wait = max(wait or 0.0, rule.min_retry_after_s)
    return Result(delivery_id, rule.outcome, status, f"{detail} ({rule.why})"[:500], latency_ms,
                  wait if rule.outcome == "transient" else None)


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


class ProviderChannel:
    """Base of the provider channels: ``send`` is the channel interface, ``send_one`` the provider's."""

    name: str = ""

    def __init__(self) -> None:
        self.gate: Gate = make_gate(self.name)
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

    def send(self, messages: list[Message], *, probe: bool = False) -> list[Result]:
        # probe: this batch is the circuit's probe (an argument, not state: threads share the channel)
        results = runtime.run(self.send_all(messages, probe=probe))
        auth = [r for r in results if r.outcome == "auth"]
        if auth:
            self.alert_auth(auth[0].reason or "credentials refused", len(auth))
        return results

    async def send_all(self, messages: list[Message], *, probe: bool = False) -> list[Result]:
        await self.open()
        results: list[Result] = []
        state = {"down_run": 0, "down": 0, "sent": 0, "stop": False}
        threshold = 1 if probe else self.gate.circuit_failures

        async def one(message: Message) -> None:
            try:
                result, rule = await self.send_one(message)
            except Exception as exc:  # noqa: BLE001 - one bad target never fails the batch
                log.exception("%s: unexpected error sending delivery %s", self.name, message.target.delivery_id)
                result, rule = Result(message.target.delivery_id, "transient", None,
                                      f"herald error: {type(exc).__name__}: {exc}"[:500]), None
            results.append(result)
            if result.outcome == "sent":
                state["sent"] += 1
                state["down_run"] = 0
            elif is_down(result):
                state["down"] += 1
                state["down_run"] += 1
                if state["down_run"] >= threshold:
                    state["stop"] = True
            if rule is not None and rule.provider_wide and result.retry_after_s:
                self.gate.block_for(result.retry_after_s)
                state["stop"] = True

        async def lane(chunk: list[Message], lease: object) -> None:
            try:
                await asyncio.gather(*(one(m) for m in chunk))
            finally:
                self.gate.release(lease)  # type: ignore[arg-type]

        lanes: list[asyncio.Task[None]] = []
        index = 0
        if probe and messages:
            # Half-open: one message first; the rest only if the provider answers again.
            lease, _ = self.gate.acquire(1)
            if lease is not None:
                await lane(messages[:1], lease)
                index = 1
        defer_s: float | None = None
        while index < len(messages) and not state["stop"]:
            lease, wait_s = self.gate.acquire(min(CHUNK, len(messages) - index))
            if lease is None:
                if wait_s > MAX_WAIT_S:
                    defer_s = wait_s
                    break
                await asyncio.sleep(wait_s)
                continue
            chunk = messages[index:index + lease.count]
            index += lease.count
            lanes.append(asyncio.create_task(lane(chunk, lease)))
            await asyncio.sleep(0)  # let the lane start before asking for the next lease
        if lanes:
            await asyncio.gather(*lanes)
        open_s = self.gate.report(successes=state["sent"], down=state["down"], probe=probe)
        for message in messages[index:]:
            # Never sent: back to pending without spending an attempt.
            wait = defer_s if defer_s is not None else max(open_s, 1.0)
            results.append(Result(message.target.delivery_id, "deferred", None,
                                  f"not sent: {self.name} asked to wait or looks down", None, wait))
        return results

    def alert_auth(self, reason: str, count: int) -> None:
        """Raise one ``ops.processing_delayed`` event through herald itself (tokens are kept)."""
        from herald.settings import get_settings

        interval = get_settings().channel_auth_alert_interval_s
        now = time.time()
        if now - self._last_alert < interval:
            return
        self._last_alert = now
        try:
            from producers import ops_event, publish

            bucket = int(now // interval)
            publish(ops_event("processing_delayed", f"push:{self.name}", environment="prod",
                              metric="auth_error", value=count, threshold=0,
                              idempotency_key=f"herald-auth-{self.name}-{bucket}",
                              source="herald/deliver"))
            log.error("%s refused herald's credentials (%d targets): %s", self.name, count, reason)
        except Exception:  # noqa: BLE001 - the alert must never fail the batch it reports on
            log.exception("could not publish the auth alert for %s", self.name)


def with_latency(result: Result, started: float) -> Result:
    return replace(result, latency_ms=int((time.perf_counter() - started) * 1000))
