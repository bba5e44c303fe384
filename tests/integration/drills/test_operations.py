"""Drills: operations alerts while a pool is dead, and `herald status` while a condition is raised."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from herald import db
from herald.models import Delivery, EventRow
from tests.integration.conftest import wait_until
from tests.integration.drills.conftest import Drill


def _ops_sent() -> list[Any]:
    """Operations events with a delivery sent to the operations person."""
    with db.session() as s:
        return list(s.execute(select(EventRow.type, EventRow.subject).join(Delivery, Delivery.event_id == EventRow.id)
                              .where(EventRow.type.like("ops.%"), Delivery.status == "sent")).all())


@pytest.mark.drill
@pytest.mark.drill_env(HERALD_BACKLOG_DEPTH_THRESHOLD=5, HERALD_BACKLOG_AGE_THRESHOLD_S=3)
# ingest: the alerts' first stage; deliver.fcm: the operations person's own channel
@pytest.mark.parametrize("pool", ["ingest", "deliver.fcm"])
def test_a_pool_dead_its_operations_alert_is_still_delivered(drill: Drill, pool: str) -> None:
    # given the pool dead, and a burst piling up behind it
    drill.stack.kill(pool)
    burst = drill.burst(count=30, pace_s=0.02)
    accepted = burst.wait()
    # then the operations person hears about it (a backlog, a delay, a pool down) while the pool is still dead
    try:
        alerts = wait_until(_ops_sent, timeout_s=45, interval_s=1, message="an operations alert delivered")
    finally:
        still_dead = drill.stack.procs[pool].poll() is not None
        drill.stack.start(pool)
    assert still_dead
    print(f"\n[drill] ops alerts sent while {pool} was dead: {alerts}")
    # and once the pool is back, the burst drains
    drill.promise(f"{pool} dead, ops lane", accepted, since=burst.started)


@pytest.mark.drill
@pytest.mark.drill_env(HERALD_SLA_DEFAULT_S=2, HERALD_BACKLOG_AGE_THRESHOLD_S=3)
def test_status_exits_1_while_a_condition_is_raised_and_0_once_clear(drill: Drill) -> None:
    # given the FCM deliver pool stopped while a burst comes in: its events breach their SLA
    drill.stack.stop_pool("deliver.fcm")
    burst = drill.burst(count=20, pace_s=0.02)
    accepted = burst.wait()
    # then `herald status` exits 1 and names the condition while it is raised
    wait_until(lambda: drill.stack.status()[1].get("raised"), timeout_s=40, interval_s=1,
               message="a condition raised")
    code, body = drill.stack.status()
    print(f"\n[drill] raised: {[(c['condition'], c['resource']) for c in body['raised']]}, exit {code}")
    assert code == 1, body
    # and once the pool is back and the conditions clear, it exits 0
    back = time.monotonic()
    drill.stack.start("deliver.fcm")
    drill.promise("status while raised", accepted, since=back)
    wait_until(lambda: drill.stack.status()[0] == 0, timeout_s=40, interval_s=1,
               message="herald status exit 0 once every condition cleared")
