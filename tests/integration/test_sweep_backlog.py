"""The backlog and SLA scan: raise once, clear once after staying under, on Redis and on RabbitMQ."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from celery import Celery
from kombu import Connection
from sqlalchemy import select, update

from herald import db
from herald.models import Delivery, Device, EventRow, Notification, OpsCondition, Outbox, utcnow
from herald.stamps import HEADER
from producers import flow_failed, publish
from schedules.backlog import scan_backlog
from schedules.queues import amqp_stats, queue_stats
from tests.builders import Env, env_override
from tests.integration.conftest import Workers, wait_until

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def env() -> Iterator[Env]:
    yield from env_override()


@pytest.fixture
def fast_clear(env: Env) -> Env:
    env["HERALD_BACKLOG_DEPTH_THRESHOLD"] = "20"
    env["HERALD_BACKLOG_AGE_THRESHOLD_S"] = "1"
    env["HERALD_BACKLOG_CLEAR_AFTER_S"] = "1.5"
    return env


def later(t: datetime, seconds: float) -> datetime:
    """The scan's clock moved forward (the conditions' delays and the messages' ages alike), instead of a sleep."""
    return t + timedelta(seconds=seconds)


def ops_events(resource: str | None = None) -> Counter[str]:
    with db.session() as s:
        envelopes = [o.envelope for o in s.scalars(select(Outbox))]
    return Counter(e["type"] for e in envelopes
                   if e["type"].startswith("ops.") and (resource is None or e["data"]["resource"] == resource))


def test_publish_stamps_the_time_in_the_message_headers(clean: None) -> None:
    before = time.time()
    publish(flow_failed("orders-to-erp", environment="prod", severity="warning"))  # bulk: a page rides the urgent queue
    [stats] = queue_stats(["ingest"])
    assert stats.waiting == 1 and stats.oldest_age_s is not None
    assert 0 <= stats.oldest_age_s <= time.time() - before + 0.5


def test_redis_backlog_built_by_a_paused_pool_raises_once_and_clears_once_after_it_drains(
        workers: Workers, fast_clear: Env) -> None:
    # given the ingest pool is not running (paused) while 40 events are published
    for i in range(40):
        publish(flow_failed(f"flow-{i}", environment="prod", severity="warning"))
    t = utcnow()
    # when the scan runs, twice, 1.2 s later: the oldest message is older than its 1 s threshold
    first = scan_backlog(later(t, 1.2), queues=["ingest"])
    scan_backlog(later(t, 1.3), queues=["ingest"])
    # then backlog and delay were each raised once, on the ingest queue
    assert first is not None and first["queues"]["ingest"]["waiting"] >= 40
    assert ops_events("ingest") == {"ops.queue_backlog": 1, "ops.processing_delayed": 1}
    # when the pool comes back and drains the queue
    workers.start("all")
    wait_until(lambda: queue_stats(["ingest"])[0].depth == 0, timeout_s=90, message="ingest drained")
    t = utcnow()
    scan_backlog(t, queues=["ingest"])
    # then nothing clears at once: it must stay under for the clearing delay (1.5 s)
    assert ops_events("ingest") == {"ops.queue_backlog": 1, "ops.processing_delayed": 1}
    scan_backlog(later(t, 1.6), queues=["ingest"])
    scan_backlog(later(t, 1.7), queues=["ingest"])
    # then each clears exactly once
    assert ops_events("ingest") == {"ops.queue_backlog": 1, "ops.processing_delayed": 1,
                                    "ops.queue_backlog_cleared": 1, "ops.processing_delayed_cleared": 1}
    # and the cleared event carries what was measured
    with db.session() as s:
        cleared = [o.envelope for o in s.scalars(select(Outbox))
                   if o.envelope["type"] == "ops.queue_backlog_cleared"][0]
    assert cleared["data"]["metric"] == "depth" and cleared["data"]["threshold"] == 20
    # and the scan reports the recent throughput of the queues it drained
    last = scan_backlog(later(t, 1.8), queues=["ingest"])
    assert last is not None and last["throughput"]["per_queue_per_min"]["ingest"] >= 40


def test_a_value_hovering_around_the_threshold_does_not_flap(clean: None, fast_clear: Env) -> None:
    # given a backlog raised, then back under for less than the clearing delay, then over again
    for i in range(25):
        publish(flow_failed(f"flow-{i}", environment="prod", severity="warning"))
    t = utcnow()
    scan_backlog(t, queues=["ingest"])
    from tests.integration.conftest import clear_broker

    clear_broker()
    scan_backlog(later(t, 0.1), queues=["ingest"])
    for i in range(25):
        publish(flow_failed(f"again-{i}", environment="prod", severity="warning"))
    # (past the clearing delay since it went under, but over again)
    scan_backlog(later(t, 1.7), queues=["ingest"])
    # then it was raised once and never cleared
    assert ops_events("ingest")["ops.queue_backlog"] == 1
    assert ops_events("ingest")["ops.queue_backlog_cleared"] == 0


def test_rabbitmq_backlog_raises_once_and_clears_once(clean: None, fast_clear: Env) -> None:
    # given a RabbitMQ queue holding 30 task messages sent by Celery (stamped by herald.stamps)
    queue = f"herald-test-{uuid.uuid4().hex[:8]}"
    sender = Celery("herald-test-sender", broker=AMQP_URL, set_as_current=False)
    sender.conf.broker_transport_options = {"confirm_publish": True}
    try:
        for i in range(30):
            sender.send_task("herald.ingest", args=[{"n": i}], queue=queue)
        t = utcnow()
        # when the scan runs, twice, 1.2 s later: the oldest message is older than its 1 s threshold
        first = scan_backlog(later(t, 1.2), queues=[queue], broker_url=AMQP_URL)
        scan_backlog(later(t, 1.3), queues=[queue], broker_url=AMQP_URL)
        # then it saw the depth and the age, and raised each once; peeking left the messages in place
        assert first is not None
        assert first["queues"][queue]["waiting"] == 30 and first["queues"][queue]["oldest_age_s"] >= 1
        assert amqp_stats(AMQP_URL, [queue], peek=False)[0].waiting == 30
        assert ops_events(queue) == {"ops.queue_backlog": 1, "ops.processing_delayed": 1}
        # when a consumer drains the queue, and the scan runs again past the clearing delay
        with Connection(AMQP_URL) as conn:
            simple = conn.SimpleQueue(queue, no_ack=False)
            for _ in range(30):
                message = simple.get(timeout=5)
                assert HEADER in message.headers
                message.ack()
            simple.close()
        t = utcnow()
        scan_backlog(t, queues=[queue], broker_url=AMQP_URL)
        scan_backlog(later(t, 1.6), queues=[queue], broker_url=AMQP_URL)
        scan_backlog(later(t, 1.7), queues=[queue], broker_url=AMQP_URL)
        # then each condition cleared once
        assert ops_events(queue) == {"ops.queue_backlog": 1, "ops.processing_delayed": 1,
                                     "ops.queue_backlog_cleared": 1, "ops.processing_delayed_cleared": 1}
    finally:
        with Connection(AMQP_URL) as conn:
            conn.default_channel.queue_delete(queue)
        sender.close()


def test_rabbitmq_queue_never_declared_reads_as_empty() -> None:
    [stats] = amqp_stats(AMQP_URL, [f"herald-missing-{uuid.uuid4().hex[:8]}"])
    assert (stats.waiting, stats.oldest_age_s) == (0, None)


def test_sla_breach_raises_once_and_clears_once_when_delivered(sample_directory: None, env: Env) -> None:
    # given a failure-flow SLA of 60 s and an event whose delivery has waited 90 s
    env["HERALD_SLA_S"] = '{"failure": 60}'
    env["HERALD_BACKLOG_CLEAR_AFTER_S"] = "30"
    now = utcnow()
    event_id = uuid.uuid4()
    with db.session() as s:
        device = s.scalars(select(Device).where(Device.person_id == "chen")).first()
        assert device is not None
        s.add(EventRow(id=event_id, type="flow.failed", flow="failure", source="test", environment="prod",
                    severity="error", idempotency_key=str(event_id), occurred_at=now - timedelta(seconds=90),
                    received_at=now - timedelta(seconds=90), data={"flow": "orders-to-erp"}, status="resolved",
                    status_at=now - timedelta(seconds=89)))
        s.flush()
        note = Notification(event_id=event_id, person_id="chen", route="flow-failures", reason="on call")
        s.add(note)
        s.flush()
        s.add(Delivery(notification_id=note.id, event_id=event_id, device_id=device.id, channel=device.channel,
                       batch_id=uuid.uuid4(), status="pending"))
    # when the scan runs twice
    summary = scan_backlog(now, queues=["ingest"])
    scan_backlog(now + timedelta(seconds=5), queues=["ingest"])
    # then the failure flow's SLA is breached, once
    assert summary is not None and summary["flows"]["failure"]["pending_past_sla"] == 1
    assert ops_events("failure") == {"ops.sla_breached": 1}
    # when it is delivered, the breach clears only after staying clear for 30 s, and once
    with db.session() as s:
        s.execute(update(Delivery).values(status="sent", sent_at=now + timedelta(seconds=10)))
        s.execute(update(Notification).values(first_delivered_at=now + timedelta(seconds=10)))
    scan_backlog(now + timedelta(seconds=11), queues=["ingest"])
    assert ops_events("failure") == {"ops.sla_breached": 1}
    late = scan_backlog(now + timedelta(seconds=45), queues=["ingest"])
    scan_backlog(now + timedelta(seconds=50), queues=["ingest"])
    assert ops_events("failure") == {"ops.sla_breached": 1, "ops.sla_breached_cleared": 1}
    assert late is not None and late["flows"]["failure"]["delivered"] == 1
    with db.session() as s:
        row = s.get(OpsCondition, ("sla_breached", "failure"))
        assert row is not None and not row.raised and row.cleared_at is not None
