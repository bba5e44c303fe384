"""`herald status` lists each worker pool from the workers' heartbeats, and exits 1 when one is down or an
operations condition is raised."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from herald import db
from herald.models import OpsCondition, WorkerHeartbeat, utcnow
from herald.settings import get_settings
from schedules.beat import record_beat_start
from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import rows

runner = CliRunner()
FAST = {"HERALD_HEARTBEAT_INTERVAL_S": "0.5", "HERALD_HEARTBEAT_TIMEOUT_S": "3"}


@pytest.fixture
def fast_heartbeats() -> Iterator[None]:
    """Heartbeats every half second, a pool down after 3 s without one (here and in the workers started)."""
    saved = {k: os.environ.get(k) for k in FAST}
    os.environ.update(FAST)
    get_settings.cache_clear()
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


def status() -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["status", "--json"])
    return result.exit_code, json.loads(result.stdout)


def pool_states(body: dict[str, Any]) -> dict[str, str]:
    return {p["pool"]: p["state"] for p in body["pools"]}


def test_a_killed_pool_is_reported_down_and_status_exits_1(workers: Workers, fast_heartbeats: None) -> None:
    # given beat just started (no sweep overdue), and an ingest and a deliver.fcm pool, each its own process
    record_beat_start()
    workers.start("ingest", concurrency=1, kind="solo", env=FAST)
    fcm = workers.start("deliver.fcm", concurrency=1, kind="solo", env=FAST)
    # then status shows both up, with their worker, a pool nobody ran as not seen, and exits 0
    wait_until(lambda: {"ingest", "deliver.fcm"} <= {p for p, s in pool_states(status()[1]).items() if s == "up"},
               message="both pools up")
    code, body = status()
    pools = {p["pool"]: p for p in body["pools"]}
    assert [w["pid"] for w in pools["deliver.fcm"]["workers"]] == [fcm.pid]
    assert pools["deliver.apns"]["state"] == "not seen" and code == 0
    # when the deliver.fcm worker is killed (no warm shutdown: it just goes silent)
    workers.kill(fcm, signal.SIGKILL)
    # then within the heartbeat timeout status reports that pool down, the other still up, and exits 1
    wait_until(lambda: pool_states(status()[1])["deliver.fcm"] == "down", timeout_s=10,
               message="deliver.fcm down")
    code, body = status()
    pools = {p["pool"]: p for p in body["pools"]}
    assert (pools["deliver.fcm"]["last_worker"], pools["deliver.fcm"]["workers"]) == ("silent", [])
    assert pools["ingest"]["state"] == "up" and code == 1
    text = runner.invoke(app, ["status"]).stdout
    assert "deliver.fcm" in text and "down (silent)" in text
    # and a worker that comes back brings it up again (and replaces the dead one's row)
    workers.start("deliver.fcm", concurrency=1, kind="solo", env=FAST)
    wait_until(lambda: pool_states(status()[1])["deliver.fcm"] == "up", message="deliver.fcm up again")
    assert status()[0] == 0
    assert len([r for r in rows(select(WorkerHeartbeat.queues)) if "deliver.fcm" in r.queues]) == 1


def test_a_raised_operations_condition_makes_status_exit_1(clean: None) -> None:
    # given beat just started: nothing overdue, no pool ever ran, no dead letter
    record_beat_start()
    assert status()[0] == 0
    # when the backlog scan raises processing_delayed (an event older than the threshold, still not delivered)
    now = utcnow()
    with db.session() as s:
        s.add(OpsCondition(condition="processing_delayed", resource="ingest", raised=True, value=400.0,
                           threshold=300.0, raised_at=now - timedelta(minutes=2), updated_at=now))
    # then status lists it and exits 1
    code, body = status()
    assert [c["condition"] for c in body["raised"]] == ["processing_delayed"] and code == 1
    # and once it clears, status exits 0 again
    with db.session() as s:
        s.get_one(OpsCondition, ("processing_delayed", "ingest")).raised = False
    assert status()[0] == 0
