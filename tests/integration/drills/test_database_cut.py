"""Drill: Postgres unreachable for 20 s in the middle of a burst (a TCP proxy between herald and the database)."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import wait_until
from tests.integration.drills.conftest import Drill

pytestmark = pytest.mark.drill

OUTAGE_S = 20


# What an outage legitimately causes: failed connections, logged while they are retried.
OUTAGE_LOG_ERRORS = (r"OperationalError", r"[Cc]onnection refused", r"server closed the connection",
                     r"consuming input failed|connection is lost|connection failed")


@pytest.mark.expect_log_errors(*OUTAGE_LOG_ERRORS)
def test_database_cut_for_20s_is_waited_out(drill: Drill) -> None:
    database_cut_drill(drill)


def database_cut_drill(drill: Drill, broker: str = "") -> None:
    """The drill itself, on whichever broker ``drill`` runs (``broker`` names it in the figures)."""
    # given a burst under way
    burst = drill.burst(count=30, pace_s=0.05)
    wait_until(lambda: len(burst.accepted()) >= 10, timeout_s=30, message="the burst under way")
    # when the database is unreachable for 20 s (new connections refused, open ones dropped)
    drill.db_proxy.cut()
    time.sleep(OUTAGE_S)
    drill.db_proxy.restore()
    accepted = burst.wait()
    # then the outage was waited out: every accepted event stored and delivered, nothing acknowledged unrecorded
    drill.promise(f"Postgres cut {OUTAGE_S}s{broker and f' ({broker})'}", accepted, since=burst.started, timeout_s=150)
