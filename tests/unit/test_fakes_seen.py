"""The fakes' log of what they accepted (devtools/fakes/state.py SeenLog): a sequence of dicts that never slows
the fakes' garbage collection.

Issue 11: during a 100,000-device burst one page in twenty took 300 ms where 130 is usual: all three providers
answered it ~150 ms late together, a full collection of the fakes' process walking the dicts of 600,000 entries.
"""

from __future__ import annotations

import gc

from devtools.fakes.state import SeenLog


def entry(i: int) -> dict[str, object]:
    return {"at": float(i), "token": f"tok-{i}", "status": 200, "data": {"event_id": f"e{i}", "n": [i, None]}}


def test_reads_back_every_entry_in_order_and_stays_bounded() -> None:
    log = SeenLog(maxlen=3)
    assert len(log) == 0 and list(log) == [] and log.since(0) == []
    for i in range(5):
        log.append(entry(i))
    # the oldest fell off; what is left reads back equal, oldest first, and pages from an index
    assert len(log) == 3 and list(log) == [entry(2), entry(3), entry(4)]
    assert log.since(1) == [entry(3), entry(4)] and log.since(7) == []
    # a reader's copy is its own
    first = next(iter(log))
    first["token"] = "changed"
    assert list(log)[0]["token"] == "tok-2"
    log.clear()
    assert len(log) == 0


def test_its_entries_are_nothing_the_garbage_collector_walks() -> None:
    log = SeenLog()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(20_000):
        log.append(entry(i))
    grown = len(gc.get_objects()) - before
    # a deque of dicts adds three tracked objects per entry (60,000 here); the log adds none per entry
    assert grown < 1_000, grown
    assert len(log) == 20_000 and log.since(19_999) == [entry(19_999)]
