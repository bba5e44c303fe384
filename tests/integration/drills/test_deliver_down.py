"""Drill: a deliver pool down for a while, then back: recovery re-enqueues each stalled batch once per stall."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from herald import db
from herald.models import Delivery, EventRow
from tests.integration.conftest import wait_until
from tests.integration.drills.conftest import Drill

pytestmark = pytest.mark.drill

DOWN_S = 16  # the stall deadline (6 s) and five recovery periods (2 s)


def _fcm_batches() -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count(func.distinct(Delivery.batch_id))).where(Delivery.channel == "fcm")) or 0)


def _resolved(ids: list) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(EventRow)
                            .where(EventRow.id.in_(ids), EventRow.status == "resolved")) or 0)


def test_deliver_pool_down_queue_stays_bounded_and_drains_when_back(drill: Drill) -> None:
    # given the FCM deliver pool stopped
    drill.stack.stop_pool("deliver.fcm")
    # when a burst is resolved into FCM batches nobody consumes, for longer than many recovery periods
    burst = drill.burst(count=30, pace_s=0.02)
    accepted = burst.wait()
    wait_until(lambda: _resolved(accepted) == len(accepted), timeout_s=60, message="the burst resolved")
    time.sleep(DOWN_S)
    depth, batches = drill.stack.queue_depth(drill.broker, "deliver.fcm"), _fcm_batches()
    print(f"\n[drill] deliver.fcm down {DOWN_S}s: {depth} messages queued for {batches} batches")
    # then `herald status` says the pool is down
    drill.stack.wait_pool_state("deliver.fcm", "down", timeout_s=5)
    # and once the pool is back, everything drains, nothing sent twice
    back = time.monotonic()
    drill.stack.start("deliver.fcm")
    figures = drill.promise(f"deliver.fcm down {DOWN_S}s", accepted, since=back)
    assert figures.duplicates == 0
    # and while it was down the queue held each stalled batch at most twice (its message, one re-enqueue)
    assert batches > 0 and depth <= 2 * batches, f"{depth} messages queued for {batches} stalled batches"
