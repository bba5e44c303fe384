"""The provider gate (shared limit, Retry-After, circuit), payload trimming and the devices CLI."""

from __future__ import annotations

import json
import time

import pytest

from herald.channels.gate import Circuit, Gate, LocalState, RedisState
from tests.integration.conftest import REDIS_URL, TEST_ENV
from workers.deliver.payload import PayloadTooLarge, fit


def redis_gate(provider: str, max_in_flight: int = 3, rate_per_s: int = 0) -> Gate:
    state = RedisState(REDIS_URL, TEST_ENV["HERALD_BROKER_KEY_PREFIX"], provider, 3, 0.5, 4.0)
    return Gate(provider, state, max_in_flight, rate_per_s, 3)


@pytest.mark.parametrize("shared", [True, False])
def test_leases_never_exceed_the_limit_and_come_back(clean: None, shared: bool) -> None:
    gate = redis_gate("t-limit") if shared else Gate("t", LocalState(3, 0.5, 4.0), 3, 0, 3)
    other = redis_gate("t-limit") if shared else gate  # a second process sees the same counters
    first, _ = gate.acquire(2)
    second, _ = other.acquire(5)
    none, wait = gate.acquire(1)
    assert (first.count, second.count, none) == (2, 1, None) and wait > 0  # type: ignore[union-attr]
    gate.release(first)  # type: ignore[arg-type]
    again, _ = other.acquire(5)
    assert again is not None and again.count == 2


def test_a_rate_limit_spreads_requests_over_seconds(clean: None) -> None:
    gate = redis_gate("t-rate", max_in_flight=100, rate_per_s=4)
    lease, _ = gate.acquire(10)
    assert lease is not None and lease.count <= 4
    gate.release(lease)
    none, wait = gate.acquire(1)
    if lease.count == 4:
        assert none is None and 0 < wait <= 1.0


def test_retry_after_blocks_every_process_until_it_passes(clean: None) -> None:
    gate, other = redis_gate("t-block"), redis_gate("t-block")
    gate.block_for(0.6)
    lease, wait = other.acquire(1)
    assert lease is None and 0.3 < wait <= 0.6
    time.sleep(0.65)
    assert other.acquire(1)[0] is not None


def test_the_circuit_opens_probes_once_and_closes_on_success(clean: None) -> None:
    gate, other = redis_gate("t-circuit"), redis_gate("t-circuit")
    assert gate.check("h") == Circuit("closed")
    assert gate.report("h", answered=0, down=3, probe=False) == 0.5  # threshold reached: open
    assert other.check("h").state == "open"
    time.sleep(0.55)
    assert gate.check("h").state == "probe" and other.check("h").state == "open"  # one prober only
    assert gate.report("h", answered=0, down=1, probe=True) == 1.0  # probe failed: twice as long
    time.sleep(1.05)
    assert other.check("h").state == "probe"
    other.report("h", answered=1, down=0, probe=True)
    assert gate.check("h").state == "closed"


@pytest.mark.parametrize("shared", [True, False])
def test_each_host_has_its_own_circuit_and_an_answer_from_one_never_closes_another(clean: None,
                                                                                  shared: bool) -> None:
    gate = redis_gate("t-hosts") if shared else Gate("t", LocalState(3, 0.5, 4.0), 3, 0, 3)
    # given production down (its circuit open) and sandbox answering
    assert gate.report("api.push.apple.com", answered=0, down=3, probe=False) == 0.5
    assert gate.report("api.sandbox.push.apple.com", answered=5, down=0, probe=False) == 0.0
    # then production stays open, sandbox closed
    assert gate.check("api.push.apple.com").state == "open"
    assert gate.check("api.sandbox.push.apple.com").state == "closed"
    # and failures of one host never add up with another's: two hosts, two failures each, nothing opens
    assert gate.report("a.example", answered=0, down=2, probe=False) == 0.0
    assert gate.report("b.example", answered=0, down=2, probe=False) == 0.0
    assert gate.check("a.example").state == gate.check("b.example").state == "closed"


def test_fit_trims_the_body_then_the_title_and_fails_clearly_on_the_rest() -> None:
    def encode(title: str, body: str, extra: str = "") -> bytes:
        return json.dumps({"t": title, "b": body, "x": extra}).encode()

    assert fit(encode, "short", "short", 100) == encode("short", "short")
    trimmed = json.loads(fit(encode, "title", "b" * 500, 100))
    assert trimmed["t"] == "title" and trimmed["b"].endswith("\u2026") and len(encode("title", trimmed["b"])) <= 100
    no_body = json.loads(fit(encode, "t" * 500, "b" * 500, 100))
    assert no_body["b"] == "" and no_body["t"].endswith("\u2026")
    with pytest.raises(PayloadTooLarge, match="limit 100"):
        fit(lambda t, b: encode(t, b, "x" * 200), "title", "body", 100)
