"""The gate's rules in one process (LocalState), on a clock the test moves: no sleeps, no services."""

from __future__ import annotations

import json

import pytest

from herald.channels.gate import Circuit, Gate, LocalState
from herald.payload import PayloadTooLarge, fit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def local_gate(clock: Clock, max_in_flight: int = 3, rate_per_s: int = 0) -> Gate:
    return Gate("t", LocalState(3, 0.5, 4.0, clock=clock), max_in_flight, rate_per_s, 3, clock=clock)


def test_leases_never_exceed_the_limit_and_come_back() -> None:
    gate = local_gate(Clock())
    first, _ = gate.acquire(2)
    second, _ = gate.acquire(5)
    none, wait = gate.acquire(1)
    assert (first.count, second.count, none) == (2, 1, None) and wait > 0  # type: ignore[union-attr]
    gate.release(first)  # type: ignore[arg-type]
    again, _ = gate.acquire(5)
    assert again is not None and again.count == 2


def test_bulk_work_leaves_a_tenth_of_the_slots_to_pages() -> None:
    gate = local_gate(Clock(), max_in_flight=200)
    burst, _ = gate.acquire(500)
    more, wait = gate.acquire(1)
    assert burst is not None and burst.count == 180 and more is None and wait > 0  # the burst stops at 180
    page, _ = gate.acquire(5, page=True)
    assert page is not None and page.count == 5  # a page goes at once
    rest, _ = gate.acquire(50, page=True)
    assert rest is not None and rest.count == 15 and gate.acquire(1, page=True)[0] is None  # never past the limit
    small = local_gate(Clock(), max_in_flight=3)  # too small to split: bulk and pages share it all
    assert small.acquire(5)[0].count == 3  # type: ignore[union-attr]


def test_a_rate_limit_spreads_requests_over_seconds() -> None:
    clock = Clock()
    gate = local_gate(clock, max_in_flight=100, rate_per_s=4)
    lease, _ = gate.acquire(10)
    assert lease is not None and lease.count == 4
    gate.release(lease)
    none, wait = gate.acquire(1)
    assert none is None and 0 < wait <= 1.0
    clock.now += 1
    assert gate.acquire(10)[0] is not None


def test_retry_after_blocks_until_it_passes() -> None:
    clock = Clock()
    gate = local_gate(clock)
    gate.block_for(0.6)
    lease, wait = gate.acquire(1)
    assert lease is None and wait == pytest.approx(0.6)
    clock.now += 0.61
    assert gate.acquire(1)[0] is not None


def test_the_circuit_opens_probes_once_and_closes_on_success() -> None:
    clock = Clock()
    gate = local_gate(clock)
    assert gate.check("h") == Circuit("closed")
    assert gate.report("h", answered=0, down=3, probe=False) == 0.5  # threshold reached: open
    assert gate.check("h").state == "open"
    clock.now += 0.5
    assert gate.check("h").state == "probe" and gate.check("h").state == "open"  # one prober only
    assert gate.report("h", answered=0, down=1, probe=True) == 1.0  # probe failed: twice as long
    clock.now += 0.99
    assert gate.check("h").state == "open"
    clock.now += 0.02
    assert gate.check("h").state == "probe"
    gate.report("h", answered=1, down=0, probe=True)
    assert gate.check("h").state == "closed"


def test_failures_further_apart_than_the_window_do_not_add_up() -> None:
    # given a quiet host (60 s window, 3 failures open it) that failed twice, then nothing for a minute
    clock = Clock()
    gate = local_gate(clock)
    assert gate.report("h", answered=0, down=2, probe=False) == 0.0
    clock.now += 60.01
    # then one failure after the quiet spell starts the count again: the circuit stays closed
    assert gate.report("h", answered=0, down=1, probe=False) == 0.0
    assert gate.check("h").state == "closed"
    # and failures each within the window of the one before add up however long the run: the third opens it
    clock.now += 59
    assert gate.report("h", answered=0, down=1, probe=False) == 0.0
    clock.now += 59
    assert gate.report("h", answered=0, down=1, probe=False) == 0.5
    assert gate.check("h").state == "open"


def test_each_host_has_its_own_circuit_and_an_answer_from_one_never_closes_another() -> None:
    gate = local_gate(Clock())
    assert gate.report("api.push.apple.com", answered=0, down=3, probe=False) == 0.5
    assert gate.report("api.sandbox.push.apple.com", answered=5, down=0, probe=False) == 0.0
    assert gate.check("api.push.apple.com").state == "open"
    assert gate.check("api.sandbox.push.apple.com").state == "closed"
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
