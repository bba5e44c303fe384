"""Drill: the broker (a Redis without persistence, as on this machine) restarted in the middle of a burst."""

from __future__ import annotations

import pytest

from tests.integration.conftest import wait_until
from tests.integration.drills.conftest import Drill, DrillRedis

pytestmark = pytest.mark.drill


# What a restart legitimately causes: consumers, beat and the producer reconnect, an ack of a message the new
# Redis never had fails, Celery's gossip step logs its failed restart. A pool that dies of it is not declared.
@pytest.mark.expect_log_errors(r"consumer: Cannot connect to redis", r"beat: Connection error",
                               r"Couldn't ack .*reason:network:ConnectionError", r"Error on restarting Gossip",
                               r"Error while reading from|Connection refused|ConnectionError")
def test_redis_restarted_mid_burst_loses_no_accepted_event(drill: Drill) -> None:
    # given a burst under way, with messages waiting in the ingest queue and held by the pools (ingest is held
    # back until a backlog has formed: on an idle machine it would keep the queue empty)
    drill.stack.stop_pool("ingest")
    burst = drill.burst(count=40, pace_s=0.05)
    wait_until(lambda: drill.stack.queue_depth(drill.broker, "ingest") >= 5, timeout_s=30, interval_s=0.02,
               message="a backlog in the ingest queue")
    drill.stack.start("ingest", wait=False)
    # when Redis is killed and started again empty, while the producer still publishes
    assert isinstance(drill.broker, DrillRedis)  # this module runs on the default drill_broker, a Redis of its own
    drill.broker.restart(down_s=1.0)
    accepted = burst.wait()
    # then every event the producer was told was accepted is stored and delivered, and no pool died of it
    drill.promise("Redis restarted mid-burst", accepted, since=burst.started)
