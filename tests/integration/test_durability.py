"""Accepted means durable: direct mode on a Redis that forgets, a killed ingest, the broker checks at start.

Each test that breaks Redis starts a redis-server of its own (no persistence, as on this machine), so the
Redis the other tests share is never touched.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from sqlalchemy import func, select

from herald.models import EventRow, Outbox
from tests.integration import ownredis
from tests.integration.conftest import DATA_DIR, SESSION, Workers, wait_until
from tests.integration.helpers import rows
from tests.integration.ownredis import PUBLISH_DIRECT, OwnRedis, env_for, run_python


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    yield from ownredis.serve()


def stored(ids: list[str]) -> int:
    return rows(select(func.count()).select_from(EventRow).where(EventRow.id.in_(ids)))[0][0]


def queue_length(server: OwnRedis, queue: str = "ingest") -> int:
    return cast(int, redis.Redis.from_url(server.url).llen(f"{SESSION}:{queue}"))


def test_direct_publish_survives_a_redis_restart_without_persistence(own_redis: OwnRedis, workers: Workers) -> None:
    # given 20 events published directly (by a producer with the database) while no ingest runs
    done = run_python(PUBLISH_DIRECT.format(n=20), env_for(own_redis))
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 20 and queue_length(own_redis) == 20
    # when Redis restarts without persistence and forgets them all
    own_redis.restart()
    assert queue_length(own_redis) == 0
    # then the pipeline, once running, stores every one of them (the outbox sweep republished them)
    workers.start("ingest,sweeps", concurrency=2, kind="threads", beat=True, env=env_for(own_redis))
    wait_until(lambda: stored(ids) == 20, timeout_s=60, message="every accepted event stored")
    # and the outbox knows each was ingested
    assert rows(select(func.count()).select_from(Outbox).where(Outbox.ingested_at.is_(None)))[0][0] == 0


TAKE_AND_DIE = (
    "import os, signal\n"
    "from herald.app import app\n"
    "conn = app.connection_for_read()\n"
    "channel = conn.default_channel\n"
    "taken = 0\n"
    "while channel.basic_get('ingest', no_ack=False) is not None:\n"
    "    taken += 1\n"
    "print(taken, flush=True)\n"
    "os.kill(os.getpid(), signal.SIGKILL)  # as a SIGKILLed ingest: its prefetched messages stay unacknowledged\n")


def test_a_killed_ingests_messages_are_stored_in_seconds_not_after_the_visibility_timeout(
        own_redis: OwnRedis, workers: Workers) -> None:
    # given 10 events published directly, taken by a consumer that was SIGKILLed before acknowledging them
    done = run_python(PUBLISH_DIRECT.format(n=10), env_for(own_redis))
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    died = run_python(TAKE_AND_DIE, env_for(own_redis))
    assert died.returncode == -9 and died.stdout.split() == ["10"]
    assert queue_length(own_redis) == 0  # they wait in Redis's unacked hash, for the visibility timeout (1 h)
    # when the pipeline runs again
    started = time.monotonic()
    workers.start("ingest,sweeps", concurrency=2, kind="threads", beat=True, env=env_for(own_redis))
    # then every event is stored within seconds (outbox grace 2 s in the tests, 30 s by default)
    wait_until(lambda: stored(ids) == 10, timeout_s=45, message="every accepted event stored")
    assert time.monotonic() - started < 45


def test_a_worker_warns_at_start_when_redis_has_no_append_only_persistence(own_redis: OwnRedis,
                                                                           workers: Workers) -> None:
    before = set(DATA_DIR.glob("worker-sweeps-*.log"))
    workers.start("sweeps", concurrency=1, kind="threads", env=env_for(own_redis))
    (log,) = set(DATA_DIR.glob("worker-sweeps-*.log")) - before
    wait_until(lambda: "no append-only persistence (appendonly no)" in log.read_text(), timeout_s=60,
               message="the persistence warning in the worker log")
    assert "WARNING" in next(line for line in log.read_text().splitlines() if "append-only" in line)


def test_the_persistence_check_reads_appendonly_and_tolerates_a_disabled_config(
        caplog: pytest.LogCaptureFixture) -> None:
    from herald.broker import check_redis_persistence

    caplog.set_level(logging.WARNING, logger="herald.broker")
    plain = OwnRedis()
    locked = OwnRedis("--rename-command", "CONFIG", "")  # as managed Redis services often do
    try:
        # a Redis without persistence: "no", and a warning naming the risk
        assert check_redis_persistence(plain.url) == "no"
        assert "a Redis restart loses every queued message" in caplog.text
        caplog.clear()
        # with append-only persistence: "yes", no warning
        redis.Redis.from_url(plain.url).config_set("appendonly", "yes")
        assert check_redis_persistence(plain.url) == "yes"
        assert caplog.text == ""
        # CONFIG disabled: unknown, a warning, no exception
        assert check_redis_persistence(locked.url) is None
        assert "could not read Redis's persistence setting" in caplog.text
    finally:
        plain.stop()
        locked.stop()


def test_a_channel_closed_again_after_its_transport_was_released_does_not_crash(own_redis: OwnRedis) -> None:
    """The sequence Celery's consumer runs when Redis goes away mid-consume (herald/broker.py explains it):
    connection.collect() releases the transport while a half-closed channel still holds an unacknowledged
    message, then connection.close() closes that channel again."""
    from kombu import Connection, Exchange, Queue
    from kombu.transport import redis as kombu_redis

    from herald.broker import RedisTransport

    def half_closed(transport: type) -> tuple[Connection, Any]:
        conn = Connection(own_redis.url, transport=transport)
        queue = Queue(f"t-{uuid.uuid4().hex[:6]}", Exchange("t", type="direct"), routing_key="t")
        with conn.Producer() as producer:
            producer.publish({"n": 1}, exchange=queue.exchange, routing_key="t", declare=[queue])
        channel: Any = conn.default_channel  # the transport's own channel class
        assert channel.basic_get(queue.name, no_ack=False) is not None  # one unacknowledged message
        conn._do_close_transport()  # collect(): transport.client = None, the channel still open
        channel._disconnect_pools()  # the half-done first close dropped its pool
        return conn, channel

    # kombu's own channel crashes the caller with an AttributeError, which no one catches
    conn, channel = half_closed(kombu_redis.Transport)
    with pytest.raises(AttributeError, match="hostname"):
        conn.maybe_close_channel(channel)
    # herald's fails as the lost connection it is, which kombu and Celery handle
    conn, channel = half_closed(RedisTransport)
    conn.maybe_close_channel(channel)
    assert channel.closed
