"""A database outage is waited out: no event accepted during it is lost or dead-lettered.

The worker reaches Postgres through a TCP proxy the test cuts (as a stopped Postgres refuses
connections) and restores; the test itself reads the real database directly.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import sqlalchemy.exc
from celery import Celery
from sqlalchemy import func, select

from herald.models import DeadLetter, EventRow
from herald.settings import get_settings
from herald.taskbase import OUTAGE_HEADER, HeraldTask
from producers import artifact_deployed, publish
from tests.integration.conftest import TEST_ENV, Workers, wait_until
from tests.integration.helpers import all_done, rows
from tests.integration.tcpproxy import tcp_proxy

OUTAGE_S = 20.0


def stored(ids: list[uuid.UUID]) -> int:
    return rows(select(func.count()).select_from(EventRow).where(EventRow.id.in_(ids)))[0][0]


def test_a_database_outage_is_waited_out_and_nothing_is_dead_lettered(workers: Workers,
                                                                      sample_directory: None) -> None:
    with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = TEST_ENV["HERALD_DATABASE_URL"].replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        # given a worker for every pool whose database is behind the proxy, and an event already through
        proc = workers.start("all", concurrency=2, env={"HERALD_DATABASE_URL": url})
        first = publish(artifact_deployed("orders-api", kind="api", environment="test"))
        wait_until(lambda: all_done([first]), message="the first event delivered")
        # when the database goes away for 20 s while events keep being published
        proxy.cut()
        cut_at = time.monotonic()
        during: list[uuid.UUID] = []
        while time.monotonic() - cut_at < OUTAGE_S:
            during.append(publish(artifact_deployed(f"api-{len(during)}", kind="api", environment="test")))
            time.sleep(1.0)
        assert stored(during) == 0  # nothing could be stored while it was away
        proxy.restore()
        # then every event is stored and delivered, none is a dead letter, and the worker is still up
        wait_until(lambda: all_done([first, *during]), timeout_s=90, message="every event delivered")
        assert stored(during) == len(during) == 20
        assert rows(select(DeadLetter.reason)) == []
        assert proc.poll() is None


# --- the policy, run by Celery's own retry machinery (eagerly, in this process) --------------------------

_app = Celery("herald-outage-test", set_as_current=False)
_calls: list[str] = []
_script: list[BaseException] = []


@_app.task(base=HeraldTask, name="tests.outage.flaky", bind=True, shared=False)  # not in herald's app
def flaky(self: HeraldTask, name: str) -> str:
    """Fails with the next scripted error, if any, then succeeds."""
    _calls.append(name)
    if _script:
        raise _script.pop(0)
    return "done"


def unreachable() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def run(script: list[BaseException], headers: dict[str, Any] | None = None) -> list[str]:
    _calls.clear()
    _script[:] = script
    flaky.apply(args=["x"], headers=headers)
    return list(_calls)


def test_an_outage_is_not_counted_in_attempts_and_a_timeout_after_it_gets_all_of_them(clean: None) -> None:
    # given a task that cannot reach its database 8 times (more than HERALD_MAX_TASK_ATTEMPTS), then meets
    # a timeout 3 times
    assert get_settings().max_task_attempts == 5
    calls = run([unreachable() for _ in range(8)] + [TimeoutError("read timed out") for _ in range(3)])
    # then it ran until it succeeded: the outage did not use up its attempts, and nothing is a dead letter
    assert len(calls) == 12 and _script == []
    assert rows(select(DeadLetter.reason)) == []


@pytest.mark.expect_dead_letters(r"^retries exhausted after 5 attempts: TimeoutError")
def test_other_transient_errors_are_still_bounded_by_a_count(clean: None) -> None:
    calls = run([TimeoutError("read timed out") for _ in range(10)])
    assert len(calls) == 5
    assert [r.reason for r in rows(select(DeadLetter.reason))] == ["retries exhausted after 5 attempts: "
                                                                   "TimeoutError('read timed out')"]


@pytest.mark.expect_dead_letters(r"^database or broker unreachable for \d+s \(deadline 900s\)")
def test_an_outage_longer_than_the_deadline_is_dead_lettered(clean: None) -> None:
    # given a message whose outage began 1000 s ago (the deadline is 900 s) fails once more
    calls = run([unreachable()], headers={OUTAGE_HEADER: time.time() - 1000})
    # then it is a dead letter with its reason, replayable, not retried for ever
    assert len(calls) == 1
    [reason] = [r.reason for r in rows(select(DeadLetter.reason))]
    assert reason.startswith("database or broker unreachable for 1000s (deadline 900s)")


def stopped_mid_query() -> sqlalchemy.exc.ProgrammingError:
    """What a pool process saw when billiard's SIGTERM handler raised SystemExit inside a database call."""
    try:
        try:
            raise SystemExit(-241)
        except SystemExit as stop:
            raise sqlalchemy.exc.ProgrammingError(
                "SELECT 1", {}, Exception("can't change 'autocommit' now: connection in transaction status ACTIVE")
            ) from stop
    except sqlalchemy.exc.ProgrammingError as exc:
        return exc


def test_a_task_stopped_with_its_process_is_given_back_not_dead_lettered(clean: None) -> None:
    # given a task whose process is being stopped in the middle of a database call (seen in a drill's teardown)
    with pytest.raises(SystemExit):
        run([stopped_mid_query()])
    # then the exit goes on (the message returns to the broker: acks_late, reject_on_worker_lost)
    # and it is not mistaken for a poison message
    assert rows(select(DeadLetter.reason)) == []
