"""Lanes: herald's own operations alerts and pages each take a lane of their own, chosen per send from the
event (the lanes at work: tests/integration/test_ops_lane.py, tests/integration/test_urgent_lane.py)."""

from __future__ import annotations

import pytest

from herald.app import app
from herald.lanes import OPS_QUEUE, POOLS, TASK_ROUTES, URGENT_QUEUE, is_ops, lane_of, queue_for
from herald.settings import get_settings

STAGES = ("herald.ingest", "herald.enrich", "herald.resolve", "herald.deliver.fcm")


def test_the_ops_lane_is_chosen_per_send_from_the_event() -> None:
    # herald's own operations alert: every stage on the ops queue, consumed by the sweeps pool
    assert OPS_QUEUE in POOLS["sweeps"].queues
    assert is_ops("ops.queue_backlog", "herald/sweep.backlog") and is_ops("ops.processing_delayed", "herald/deliver")
    for task in STAGES:
        assert queue_for(task, "ops") == OPS_QUEUE
        assert queue_for(task, "bulk") == TASK_ROUTES[task]
    assert queue_for("herald.deliver.apns", "ops", retry=True) == OPS_QUEUE
    assert queue_for("herald.deliver.apns", "bulk", retry=True) == "retry"
    # an ops event from integration code, or any other event, takes the bulk lane
    assert not is_ops("ops.queue_backlog", "herald/producer") and not is_ops("flow.failed", "herald/sweep.backlog")
    assert lane_of("ops.queue_backlog", "herald/sweep.backlog", "error") == "ops"  # ops before urgent
    # and the first send, the outbox relay's herald.ingest with the envelope, is routed by its content
    router = app.amqp.router
    ops = {"type": "ops.queue_backlog", "source": "herald/sweep.backlog"}
    assert router.route({}, "herald.ingest", [ops], {}, None)["queue"].name == OPS_QUEUE
    # the same event type from integration code is not herald's own alert: a page (its type's default
    # severity) rides the urgent lane, a notice the bulk one
    assert router.route({}, "herald.ingest", [{**ops, "source": "erp"}], {}, None)["queue"].name == URGENT_QUEUE
    assert router.route({}, "herald.ingest", [{**ops, "source": "erp", "severity": "info"}], {},
                        None)["queue"].name == "ingest"


def test_pages_take_the_urgent_lane_through_every_stage_and_retry() -> None:
    assert POOLS["urgent"].queues == (URGENT_QUEUE,)
    assert not any(URGENT_QUEUE in pool.queues for name, pool in POOLS.items() if name != "urgent")
    for severity in ("critical", "error"):
        assert lane_of("flow.failed", "erp", severity) == "urgent"
        assert lane_of("business.order_submitted", "erp", severity) == "urgent"  # a page is its severity
    for severity in ("warning", "info"):
        assert lane_of("flow.failed", "erp", severity) == "bulk"
    for task in STAGES:
        assert queue_for(task, "urgent") == URGENT_QUEUE
    assert queue_for("herald.deliver.webpush", "urgent", retry=True) == URGENT_QUEUE
    assert queue_for("herald.sweep.due", "urgent") == TASK_ROUTES["herald.sweep.due"]  # not a pipeline task


def test_the_ingest_router_reads_the_severity_or_the_types_default() -> None:
    router = app.amqp.router
    failed = {"type": "flow.failed", "source": "erp"}  # flow.failed is an error unless it says otherwise
    assert router.route({}, "herald.ingest", [failed], {}, None)["queue"].name == URGENT_QUEUE
    assert router.route({}, "herald.ingest", [{**failed, "severity": "warning"}], {}, None)["queue"].name == "ingest"
    order = {"type": "business.order_submitted", "source": "erp"}
    assert router.route({}, "herald.ingest", [order], {}, None)["queue"].name == "ingest"
    loud = {**order, "severity": "critical"}
    assert router.route({}, "herald.ingest", [loud], {}, None)["queue"].name == URGENT_QUEUE
    # hostile input routes somewhere sane and is refused by ingest itself
    assert router.route({}, "herald.ingest", [{"type": 3, "severity": ["x"]}], {}, None)["queue"].name == "ingest"


def test_the_lane_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_URGENT_LANE", "false")
    get_settings.cache_clear()
    try:
        assert lane_of("flow.failed", "erp", "critical") == "bulk"
        assert lane_of("ops.queue_backlog", "herald/sweep.backlog", "error") == "ops"
    finally:
        monkeypatch.delenv("HERALD_URGENT_LANE")
        get_settings.cache_clear()


def test_only_a_worker_of_bulk_queues_yields_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from herald.lanes import nice_for, pool_queues

    monkeypatch.setenv("HERALD_BULK_NICE", "10")
    get_settings.cache_clear()
    try:
        assert nice_for(pool_queues("deliver.fcm")) == 10
        assert nice_for(pool_queues("ingest,enrich,resolve")) == 10
        assert nice_for(pool_queues("urgent")) == 0
        assert nice_for(pool_queues("sweeps")) == 0  # the ops lane
        assert nice_for(pool_queues("all")) == 0  # one worker for everything holds pages too
    finally:
        monkeypatch.delenv("HERALD_BULK_NICE")
        get_settings.cache_clear()
