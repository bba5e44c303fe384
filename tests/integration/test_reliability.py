"""Faults: a worker killed mid-batch, Redis unreachable or restarted, poison messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import func, select

from herald import db
from herald.events import Event
from herald.models import DeadLetter, Delivery, DeliveryAttempt, EventRow, Outbox
from producers import artifact_deployed, publish
from tests.integration import ownredis
from tests.integration.conftest import DATA_DIR, ROOT, TEST_ENV, Workers, wait_until
from tests.integration.helpers import all_done, rows
from tests.integration.ownredis import PUBLISH_DIRECT, OwnRedis, env_for, run_python

FANOUT_DIRECTORY = """
people:
{people}
teams:
  - id: everyone
    members: [{members}]
routes:
  - id: all-artifacts
    match: {{types: ["artifact.*"]}}
    recipients: [{{team: everyone}}]
"""


def apply_fanout(n: int) -> None:
    from herald import directory

    people = "\n".join(f"  - {{id: p{i}, name: P{i}, devices: [{{channel: fcm, token: fcm-tok-{i:03}}}]}}"
                        for i in range(n))
    path = DATA_DIR / "fanout.yaml"
    path.write_text(FANOUT_DIRECTORY.format(people=people, members=", ".join(f"p{i}" for i in range(n))))
    with db.session() as s:
        directory.apply(directory.load(path), s)


@contextmanager
def enriched_fanout(people: int, batch_size: int) -> Iterator[Event]:
    """An artifact event for ``people`` people, ingested and enriched in this process; inside the block, resolve
    writes batches of ``batch_size``."""
    from herald.settings import get_settings
    from workers.enrich import enrich
    from workers.ingest import ingest

    apply_fanout(people)
    os.environ["HERALD_BATCH_SIZE"] = str(batch_size)
    get_settings.cache_clear()
    try:
        event = artifact_deployed("orders-api", kind="api", environment="dev")
        ingest.run(event.to_json())
        enrich.run(str(event.id))
        yield event
    finally:
        os.environ.pop("HERALD_BATCH_SIZE", None)
        get_settings.cache_clear()


def test_worker_killed_mid_batch_loses_nothing_and_resends_only_in_flight(workers: Workers) -> None:
    # given 40 targets in batches of 10, each message taking 150 ms to "send"
    apply_fanout(40)
    slow = {"HERALD_BATCH_SIZE": "10", "HERALD_DEV_DELAY_MS": "150"}
    os.environ["HERALD_BATCH_SIZE"] = "10"  # resolve runs in the worker; keep the producer consistent
    try:
        doomed = workers.start("all", env=slow, concurrency=2, kind="prefork")
        event_id = publish(artifact_deployed("orders-api", kind="api", environment="dev"))
        # when the worker is killed while a batch is in flight, after some targets were sent
        wait_until(lambda: rows(select(func.count()).where(Delivery.status == "sent"))[0][0] >= 10
                   and rows(select(func.count()).where(Delivery.status == "sending"))[0][0] > 0,
                   message="some sent and some in flight")
        workers.kill(doomed, signal.SIGKILL)
        in_flight = {r.id for r in rows(select(Delivery.id).where(Delivery.status == "sending"))}
        sent_before = {r.id for r in rows(select(Delivery.id).where(Delivery.status == "sent"))}
        assert in_flight and sent_before
        # and a new worker (with beat: the recovery sweep) starts
        workers.start("all", env=slow, concurrency=2, kind="prefork", beat=True)
        wait_until(lambda: all_done([event_id]), timeout_s=120, message="every target terminal")
    finally:
        os.environ.pop("HERALD_BATCH_SIZE", None)
    # then every target was delivered
    assert rows(select(Delivery.status, func.count()).group_by(Delivery.status)) == [("sent", 40)]
    # the lost attempts are recorded, and exactly the in-flight targets were resent
    lost = {r.delivery_id for r in rows(select(DeliveryAttempt.delivery_id).where(DeliveryAttempt.outcome == "lost"))}
    resent = {r.delivery_id for r in rows(select(DeliveryAttempt.delivery_id).where(DeliveryAttempt.resend))}
    assert lost == in_flight and resent == in_flight
    # and nothing that was already sent was sent again
    lines = [json.loads(x) for x in Path(TEST_ENV["HERALD_DEV_OUTPUT"]).read_text().splitlines()]
    per_delivery: dict[int, int] = {}
    for line in lines:
        per_delivery[line["delivery_id"]] = per_delivery.get(line["delivery_id"], 0) + 1
    assert all(per_delivery[d] == 1 for d in sent_before)
    assert set(per_delivery) == {r.id for r in rows(select(Delivery.id))}


def _run_producer(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


DEAD_BROKER = {"HERALD_BROKER_URL": "redis://127.0.0.1:6399/0"}  # nothing listens there


def test_broker_unreachable_direct_mode_raises_a_clear_error(clean: None) -> None:
    done = _run_producer(
        "from producers import publish, artifact_deployed, BrokerUnavailable\n"
        "try:\n"
        "    publish(artifact_deployed('orders-api', kind='api', environment='dev'))\n"
        "except BrokerUnavailable as exc:\n"
        "    print('raised:', exc)\n", DEAD_BROKER)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("raised: broker unreachable after 1 retries")
    assert "was not accepted" in done.stdout


def test_broker_unreachable_outbox_mode_loses_nothing(workers: Workers, sample_directory: None) -> None:
    # given a producer whose broker is down, writing in its own transaction
    done = _run_producer(
        "from herald import db\n"
        "from producers import publish, artifact_deployed\n"
        "with db.session() as s:\n"
        "    print(publish(artifact_deployed('orders-api', kind='api', environment='dev'), session=s))\n",
        DEAD_BROKER)
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()
    # then the commit succeeded and the event waits in the outbox
    outbox = rows(select(Outbox.published_at, Outbox.ingested_at, Outbox.last_error))
    assert len(outbox) == 1 and outbox[0].published_at is None and outbox[0].ingested_at is None
    # when the pipeline runs with beat (the outbox sweep) against a reachable broker
    workers.start("all", concurrency=2, kind="threads", beat=True)
    wait_until(lambda: rows(select(EventRow.id).where(EventRow.id == event_id)), timeout_s=60, message="relayed")
    wait_until(lambda: all_done([rows(select(EventRow.id))[0].id]))
    assert rows(select(Outbox.ingested_at))[0].ingested_at is not None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    yield from ownredis.serve()


# while Redis restarts: the consumer and beat reconnect, an ack of a message Redis forgot fails (the recovery
# sweep resends from Postgres), and Celery's gossip step logs its failed restart
@pytest.mark.expect_log_errors(r"consumer: Cannot connect to redis", r"beat: Connection error",
                               r"Couldn't ack .*reason:network:ConnectionError", r"Error on restarting Gossip")
def test_redis_restarted_mid_run_every_target_still_terminal(own_redis: OwnRedis, workers: Workers) -> None:
    # given a burst in progress, with slow deliveries, on a Redis of the test's own (the shared one stays up)
    apply_fanout(30)
    env = {**env_for(own_redis), "HERALD_BATCH_SIZE": "5", "HERALD_DEV_DELAY_MS": "100"}
    workers.start("all", env=env, concurrency=2, kind="prefork", beat=True)
    # (published by a producer with the database: an event only Redis held, not yet ingested, dies with it)
    done = run_python(PUBLISH_DIRECT.format(n=4), env_for(own_redis))
    assert done.returncode == 0, done.stderr
    ids = [uuid.UUID(i) for i in done.stdout.split()]
    wait_until(lambda: rows(select(func.count()).where(Delivery.status == "sent"))[0][0] >= 5,
               message="deliveries under way")
    # when Redis restarts and forgets every queue
    own_redis.restart()
    # then the sweep finds the work pending past its deadline and every target ends terminal
    wait_until(lambda: all_done(ids), timeout_s=150, message="every target terminal after the restart")
    assert rows(select(Delivery.status, func.count()).group_by(Delivery.status)) == [("sent", 120)]


@pytest.mark.expect_dead_letters(r"^undecodable message", r"^unknown task 'herald.no_such_task'$",
                                 r"^InvalidEvent", r"^PoisonMessage: not an event id", r"^TypeError: resolve\(\)")
@pytest.mark.expect_log_errors(r"dead letter \d+: (message|task)", r"\] task herald\.\w+\[[-\w]+\] dead-lettered",
                               r"Received unregistered task of type 'herald.no_such_task'")
def test_poison_messages_are_dead_lettered_and_the_worker_keeps_going(workers: Workers,
                                                                      sample_directory: None) -> None:
    from herald.app import app

    proc = workers.start("ingest,enrich,resolve,deliver.fcm,deliver.apns,deliver.webpush,retry",
                         concurrency=2, kind="prefork")
    # given malformed messages of every kind on the queues
    with app.producer_or_acquire() as producer:
        queue = app.amqp.queues["ingest"]
        producer.publish(b"{this is not json", routing_key="ingest", exchange=queue.exchange, declare=[queue],
                         content_type="application/json", content_encoding="utf-8")
    app.send_task("herald.no_such_task", args=[1], queue="ingest")
    app.send_task("herald.ingest", args=[{"type": "artifact.deployed", "data": {}}])
    app.send_task("herald.enrich", args=["not-a-uuid"])
    app.send_task("herald.resolve", args=["a", "b", "c"])
    # when a good event follows them
    good = publish(artifact_deployed("orders-api", kind="api", environment="test"))
    # then it is delivered, the worker is still the same process, and each poison is kept with its reason
    wait_until(lambda: all_done([good]), message="good event delivered")
    wait_until(lambda: len(rows(select(DeadLetter.id))) >= 5, message="five dead letters")
    assert proc.poll() is None
    reasons = sorted(r.reason for r in rows(select(DeadLetter.reason)))
    assert any(r.startswith("undecodable message") for r in reasons)
    assert any(r == "unknown task 'herald.no_such_task'" for r in reasons)
    assert any("InvalidEvent" in r and "environment" in r for r in reasons)
    assert any("PoisonMessage: not an event id: 'not-a-uuid'" in r for r in reasons)
    assert any(r.startswith("TypeError") for r in reasons)
    assert rows(select(func.count()).select_from(EventRow))[0][0] == 1


def test_a_resolve_that_died_mid_way_is_resumed_without_notifying_anyone_twice(clean: None) -> None:
    # given a fan-out to 25 people, written in chunks of 10, whose resolve died after the first chunk
    from datetime import timedelta

    from sqlalchemy import update

    from herald.models import Notification
    from herald.models import utcnow as datetime_now
    from workers.resolve import notify, resolve

    with enriched_fanout(25, batch_size=10) as event:
        with db.session() as s:
            s.execute(update(EventRow).where(EventRow.id == event.id).values(status="resolving"))
        chunks = cast(Generator[list[tuple[str, uuid.UUID]]], notify(event.id, datetime_now()))
        first = next(chunks)  # the first chunk committed and enqueued...
        chunks.close()  # ...then the process died
        assert len(rows(select(Notification.id))) == 10 and len(first) == 1
        # a fresh lease is respected: a duplicate task does nothing
        assert resolve.run(str(event.id)) == 0
        assert len(rows(select(Notification.id))) == 10
        # when the lease is stale (the recovery sweep sends resolve again)
        with db.session() as s:
            s.execute(update(EventRow).where(EventRow.id == event.id)
                      .values(status_at=datetime_now() - timedelta(seconds=600)))
        resolve.run(str(event.id))
    # then everyone has exactly one notification and one delivery, and the event is resolved
    assert rows(select(func.count(), func.count(func.distinct(Notification.person_id))).select_from(Notification)) == [
        (25, 25)]
    assert rows(select(func.count()).select_from(Delivery)) == [(25,)]
    assert rows(select(EventRow.status)) == [("resolved",)]
