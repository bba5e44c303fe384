"""Drills on RabbitMQ (issue 8: a first-class production broker, through the same drills as Redis).

One stack for the module, on a virtual host of its own on the shared RabbitMQ (created and deleted by the
fixture) reached through a TCP proxy of the drill's own: SIGKILL of the ingest pool, SIGKILL of a deliver pool,
each the Redis drill's own code (test_kill_pool.py); the broker restarted mid-burst; and Postgres cut for 20 s
(test_database_cut.py). The outages come last: what they leave behind (reconnects) cannot leak into a kill
drill's logs. The shared RabbitMQ is never stopped: its restart, as herald's processes see it, is the proxy's
(every connection dropped, new ones refused for a while; durable queues keep their messages and an
unacknowledged delivery goes back to its queue, as across a real restart).
"""

from __future__ import annotations

import shutil

import pytest

from tests.integration.conftest import wait_until
from tests.integration.drills.conftest import Drill, DrillRabbit
from tests.integration.drills.test_database_cut import OUTAGE_LOG_ERRORS, database_cut_drill
from tests.integration.drills.test_kill_pool import kill_pool_drill

pytestmark = [pytest.mark.drill,
              pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (a local RabbitMQ)")]


# What a broker restart legitimately causes: consumers reconnect (Celery logs the old connection's close as it
# cleans up after its event loop); a task that cannot hand its work on while the broker is gone is rejected and
# requeued (herald/taskbase.py: a warning with its traceback; it runs again once the broker is back); an ack on
# the dropped connection fails (the message goes back to its queue and its task runs again, idempotent); beat
# misses the ticks due while it cannot publish (each sweep runs again at its next one). A pool that dies of it
# is not declared.
BROKER_RESTART_LOG_ERRORS = (r"consumer: Cannot connect to amqp://",
                             r"Error cleaning up after event loop: (OSError|RecoverableConnectionError)\(",
                             r"Couldn't ack \d+, reason:RecoverableConnectionError",
                             r"reject requeue=True: .*(Connection refused|closed connection|disconnected)",
                             r"Couldn't apply scheduled task [\w-]+: \[Errno 111\] Connection refused")


@pytest.fixture(scope="module")
def drill_broker() -> str:
    return "rabbitmq"


@pytest.mark.parametrize("pool", ["ingest", "deliver.fcm"])
def test_sigkill_of_a_pool_on_rabbitmq_loses_nothing(shared_drill: Drill, pool: str) -> None:
    kill_pool_drill(shared_drill, pool, "RabbitMQ")


@pytest.mark.expect_log_errors(*BROKER_RESTART_LOG_ERRORS)
def test_rabbitmq_restarted_mid_burst_loses_no_accepted_event(shared_drill: Drill) -> None:
    # given a burst under way
    burst = shared_drill.burst(count=30, pace_s=0.05)
    wait_until(lambda: len(burst.accepted()) >= 10, timeout_s=30, message="the burst under way")
    # when the broker restarts: every connection dropped, refused for 3 s, then back
    assert isinstance(shared_drill.broker, DrillRabbit)
    shared_drill.broker.restart(down_s=3.0)
    accepted = burst.wait()
    # then every event the producer was told was accepted is stored and delivered, extra copies only as
    # recorded resends, and no pool died of it
    shared_drill.promise("RabbitMQ restarted mid-burst", accepted, since=burst.started)


@pytest.mark.expect_log_errors(*OUTAGE_LOG_ERRORS)
def test_database_cut_for_20s_on_rabbitmq_is_waited_out(shared_drill: Drill) -> None:
    database_cut_drill(shared_drill, "RabbitMQ")
