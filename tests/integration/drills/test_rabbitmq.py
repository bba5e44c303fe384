"""Drills on RabbitMQ (issue 8: a first-class production broker, through the same drills as Redis).

One stack for the module, on a virtual host of its own on the shared RabbitMQ (created and deleted by the
fixture): SIGKILL of the ingest pool, SIGKILL of a deliver pool, and Postgres cut for 20 s, each the Redis
drill's own code (test_kill_pool.py, test_database_cut.py). The database cut comes last: what it leaves
behind (reconnects) cannot leak into a kill drill's logs. The shared RabbitMQ is never stopped or restarted:
there is no broker-restart drill here.
"""

from __future__ import annotations

import shutil

import pytest

from tests.integration.drills.conftest import Drill
from tests.integration.drills.test_database_cut import OUTAGE_LOG_ERRORS, database_cut_drill
from tests.integration.drills.test_kill_pool import kill_pool_drill

pytestmark = [pytest.mark.drill,
              pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (a local RabbitMQ)")]


@pytest.fixture(scope="module")
def drill_broker() -> str:
    return "rabbitmq"


@pytest.mark.parametrize("pool", ["ingest", "deliver.fcm"])
def test_sigkill_of_a_pool_on_rabbitmq_loses_nothing(shared_drill: Drill, pool: str) -> None:
    kill_pool_drill(shared_drill, pool, "RabbitMQ")


@pytest.mark.expect_log_errors(*OUTAGE_LOG_ERRORS)
def test_database_cut_for_20s_on_rabbitmq_is_waited_out(shared_drill: Drill) -> None:
    database_cut_drill(shared_drill, "RabbitMQ")
