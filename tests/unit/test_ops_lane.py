"""herald's own operations alerts take a lane of their own: which send goes on it (the lane at work:
tests/integration/test_ops_lane.py)."""

from __future__ import annotations

from herald.app import app
from herald.lanes import OPS_QUEUE, POOLS, TASK_ROUTES, is_ops, queue_for


def test_the_lane_is_chosen_per_send_from_the_event() -> None:
    # herald's own operations alert: every stage on the ops queue, consumed by the sweeps pool
    assert OPS_QUEUE in POOLS["sweeps"].queues
    assert is_ops("ops.queue_backlog", "herald/sweep.backlog") and is_ops("ops.processing_delayed", "herald/deliver")
    for task in ("herald.ingest", "herald.enrich", "herald.resolve", "herald.deliver.fcm"):
        assert queue_for(task, ops=True) == OPS_QUEUE
        assert queue_for(task, ops=False) == TASK_ROUTES[task]
    assert queue_for("herald.deliver.apns", ops=True, retry=True) == OPS_QUEUE
    assert queue_for("herald.deliver.apns", ops=False, retry=True) == "retry"
    # an ops event from integration code, or any other event, takes the bulk lane
    assert not is_ops("ops.queue_backlog", "herald/producer") and not is_ops("flow.failed", "herald/sweep.backlog")
    # and the first send, the outbox relay's herald.ingest with the envelope, is routed by its content
    router = app.amqp.router
    ops = {"type": "ops.queue_backlog", "source": "herald/sweep.backlog"}
    assert router.route({}, "herald.ingest", [ops], {}, None)["queue"].name == OPS_QUEUE
    assert router.route({}, "herald.ingest", [{**ops, "source": "erp"}], {}, None)["queue"].name == "ingest"
