"""Drill: SIGKILL of each pool mid-burst (its main process and children, as the OOM killer does), then a restart."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from herald import db
from herald.models import Delivery, EventRow
from tests.integration.conftest import wait_until
from tests.integration.drills.conftest import Burst, Drill, sent_count

pytestmark = pytest.mark.drill


def _events(ids: list[uuid.UUID], *statuses: str) -> int:
    with db.session() as s:
        q = select(func.count()).select_from(EventRow).where(EventRow.id.in_(ids))
        if statuses:
            q = q.where(EventRow.status.in_(statuses))
        return int(s.scalar(q) or 0)


def _deliveries(channel: str, status: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Delivery)
                            .where(Delivery.channel == channel, Delivery.status == status)) or 0)


# The moment to kill each pool: when it holds work (prefetched or in flight), so that the kill costs something.
IN_HAND: dict[str, Callable[[Burst], bool]] = {
    "ingest": lambda b: len(b.accepted()) - _events(b.accepted()) >= 3,
    "enrich": lambda b: _events(b.accepted(), "received") >= 1,
    "resolve": lambda b: _events(b.accepted(), "enriched", "resolving") >= 1,
    "deliver.fcm": lambda b: _deliveries("fcm", "sending") >= 1,
    "retry": lambda b: _deliveries("fcm", "pending") >= 1 and len(b.accepted()) >= 10,
    "sweeps": lambda b: len(b.accepted()) >= 10,
}


@pytest.mark.parametrize("pool", list(IN_HAND))
def test_sigkill_of_a_pool_loses_nothing(shared_drill: Drill, pool: str) -> None:
    kill_pool_drill(shared_drill, pool)


def kill_pool_drill(drill: Drill, pool: str, broker: str = "") -> None:
    """The drill itself, on whichever broker ``drill`` runs (``broker`` names it in the figures)."""
    if pool == "retry":  # transient FCM errors, so that the retry queue has work to lose
        drill.fakes.call(lambda: setattr(drill.fakes.providers["fcm"].switches, "error_rate", 0.3))
    # given a burst under way, and the pool holding work
    burst = drill.burst(count=30, pace_s=0.02)
    try:
        wait_until(lambda: IN_HAND[pool](burst), timeout_s=8, interval_s=0.05, message=f"{pool} holding work")
    except AssertionError:
        print(f"\n[drill] {pool}: killed without seeing it hold work")
    # when the pool is killed with everything it held
    drill.stack.kill(pool)
    # then `herald status` reports it down (its heartbeats stopped), and it comes back
    down_after = drill.stack.wait_pool_state(pool, "down")
    print(f"\n[drill] {pool} reported down {down_after:.1f}s after the kill")
    drill.fakes.call(lambda: setattr(drill.fakes.providers["fcm"].switches, "error_rate", 0.0))
    drill.stack.start(pool)
    accepted = burst.wait()
    # then every accepted event is stored and every target sent, resends recorded, no other pool died
    drill.promise(f"SIGKILL {pool}{broker and f' ({broker})'}", accepted, since=burst.started)
    assert sent_count(accepted) == len(accepted) * 12
