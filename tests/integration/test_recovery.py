"""The recovery sweep re-enqueues each stalled item once per stall, not once per sweep period."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import cast

import redis
from sqlalchemy import func, select

from herald.models import Delivery, DeliveryAttempt, EventRow, utcnow
from herald.settings import get_settings
from producers import artifact_deployed, publish
from schedules.recover import recover_stalled
from tests.integration.conftest import REDIS_URL, SESSION, TEST_ENV, Workers, wait_until
from tests.integration.helpers import all_done, rows
from tests.integration.test_reliability import apply_fanout, enriched_fanout


def deliver_queue_depth() -> int:
    return cast(int, redis.Redis.from_url(REDIS_URL).llen(f"{SESSION}:deliver.fcm"))


def stalled_targets() -> int:
    stale = utcnow() - timedelta(seconds=get_settings().stall_deadline_s)
    return rows(select(func.count()).select_from(Delivery)
                .where(Delivery.status == "pending", Delivery.due_at < stale))[0][0]


def test_a_down_deliver_pool_gets_one_message_per_stalled_batch_not_one_per_sweep(workers: Workers) -> None:
    # given 30 targets in 3 batches, resolved while no deliver pool runs
    apply_fanout(30)
    os.environ["HERALD_BATCH_SIZE"] = "10"
    try:
        workers.start("ingest,enrich,resolve", concurrency=1, kind="solo", env={"HERALD_BATCH_SIZE": "10"})
        event_id = publish(artifact_deployed("orders-api", kind="api", environment="dev"))
        wait_until(lambda: rows(select(EventRow.status).where(EventRow.id == event_id)) == [("resolved",)],
                   message="the event resolved")
    finally:
        os.environ.pop("HERALD_BATCH_SIZE", None)
    batches = rows(select(func.count(func.distinct(Delivery.batch_id))))[0][0]
    assert batches == 3 and deliver_queue_depth() == 3
    # and the broker lost their messages (a Redis restarted without persistence), and they stalled
    redis.Redis.from_url(REDIS_URL).delete(f"{SESSION}:deliver.fcm")
    wait_until(lambda: stalled_targets() == 30, timeout_s=30, message="the targets stalled")
    # when the recovery sweep runs every period (HERALD_RECOVER_INTERVAL_S) while the pool is still down
    sweeps = []
    for _ in range(5):
        sweeps.append(recover_stalled()["batches"])
        time.sleep(get_settings().recover_interval_s / 2)
    # then each stalled batch was re-enqueued once: one message per batch waits, not one per sweep
    assert sweeps == [3, 0, 0, 0, 0]
    assert deliver_queue_depth() == 3
    # and a whole deadline later, while those copies still wait, no sweep adds another
    time.sleep(get_settings().stall_deadline_s + 0.5)
    assert recover_stalled()["batches"] == 0 and deliver_queue_depth() == 3
    # but when the broker loses the copies too, the next sweep re-enqueues them again
    redis.Redis.from_url(REDIS_URL).delete(f"{SESSION}:deliver.fcm")
    assert recover_stalled()["batches"] == 3 and deliver_queue_depth() == 3
    # when the pool comes back, every target ends sent, each sent once
    workers.start("deliver.fcm", concurrency=1, kind="solo")
    wait_until(lambda: all_done([event_id]), message="every target terminal")
    assert rows(select(Delivery.status, func.count()).group_by(Delivery.status)) == [("sent", 30)]
    assert rows(select(func.count()).select_from(DeliveryAttempt))[0][0] == 30
    sent = [json.loads(x)["delivery_id"] for x in Path(TEST_ENV["HERALD_DEV_OUTPUT"]).read_text().splitlines()]
    assert len(sent) == len(set(sent)) == 30


def test_a_resolve_sent_again_after_its_work_adds_no_copy_of_a_waiting_batch(clean: None) -> None:
    from sqlalchemy import update

    from herald import db
    from workers.resolve import resolve

    # given 30 targets in 3 batches, resolved while no deliver pool runs: one message per batch waits
    with enriched_fanout(30, batch_size=10) as event:
        assert resolve.run(str(event.id)) == 3
    assert deliver_queue_depth() == 3
    # and the targets stalled behind the down pool (due a deadline ago)
    with db.session() as s:
        s.execute(update(Delivery).values(due_at=utcnow() - timedelta(seconds=600)))
    # when resolve is sent again after its work (the recovery sweep found the event late, or a redelivery)
    assert resolve.run(str(event.id)) == 0
    # then it adds no copy: the queue still holds one message per batch (a lost one is the recovery sweep's)
    assert deliver_queue_depth() == 3
    assert rows(select(EventRow.status)) == [("resolved",)]
