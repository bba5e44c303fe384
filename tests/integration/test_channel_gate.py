"""The provider gate (shared limit, Retry-After, circuit), payload trimming and the devices CLI."""

from __future__ import annotations

from typing import cast

from herald.channels.gate import Circuit, Gate, RedisState
from tests.integration.conftest import REDIS_URL, TEST_ENV, wait_until


def redis_gate(provider: str, max_in_flight: int = 3, rate_per_s: int = 0) -> Gate:
    state = RedisState(REDIS_URL, TEST_ENV["HERALD_BROKER_KEY_PREFIX"], provider, 3, 0.5, 4.0)
    return Gate(provider, state, max_in_flight, rate_per_s, 3)


def redis_now_ms(gate: Gate) -> int:
    seconds, micros = cast(RedisState, gate.state).redis.time()  # type: ignore[misc]
    return int(seconds) * 1000 + int(micros) // 1000


def open_period_ends(gate: Gate, host: str) -> None:
    """The circuit's open period is over now, by Redis's clock (the one the scripts read): no sleep."""
    state = cast(RedisState, gate.state)
    state.redis.set(state._circuit(host)["open_until"], redis_now_ms(gate) - 1)


def test_leases_never_exceed_the_limit_and_come_back(clean: None) -> None:
    gate = redis_gate("t-limit")
    other = redis_gate("t-limit")  # a second process sees the same counters
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
    block = cast(RedisState, other.state)
    block.redis.set(block.k_block, redis_now_ms(other) - 1)  # the wait is over (Redis's clock)
    assert other.acquire(1)[0] is not None


def test_the_circuit_opens_probes_once_and_closes_on_success(clean: None) -> None:
    gate, other = redis_gate("t-circuit"), redis_gate("t-circuit")
    assert gate.check("h") == Circuit("closed")
    assert gate.report("h", answered=0, down=3, probe=False) == 0.5  # threshold reached: open
    assert other.check("h").state == "open"
    open_period_ends(gate, "h")
    assert gate.check("h").state == "probe" and other.check("h").state == "open"  # one prober only
    assert gate.report("h", answered=0, down=1, probe=True) == 1.0  # probe failed: twice as long
    assert other.check("h").state == "open"
    open_period_ends(gate, "h")
    assert other.check("h").state == "probe"
    other.report("h", answered=1, down=0, probe=True)
    assert gate.check("h").state == "closed"


def test_failures_further_apart_than_the_window_do_not_add_up(clean: None) -> None:
    # given a host with a 0.3 s window (3 failures open it) that failed twice
    state = RedisState(REDIS_URL, TEST_ENV["HERALD_BROKER_KEY_PREFIX"], "t-window", 3, 0.5, 4.0,
                       failure_window_s=0.3)
    fails = state._circuit("h")["fails"]
    assert state.failed("h", 2, probe=False) == 0.0
    assert 0 < state.redis.pttl(fails) <= 300  # type: ignore[operator]
    # when the window passes without another failure, Redis forgets the count
    wait_until(lambda: not state.redis.exists(fails), timeout_s=5, message="the failure count to expire")
    # then one more failure starts the count again: the circuit stays closed
    assert state.failed("h", 1, probe=False) == 0.0
    assert state.check("h") == Circuit("closed")
    # and the count reaching the threshold within the window opens it
    assert state.failed("h", 2, probe=False) == 0.5
    assert state.check("h").state == "open"


def test_each_host_has_its_own_circuit_and_an_answer_from_one_never_closes_another(clean: None) -> None:
    gate = redis_gate("t-hosts")
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
