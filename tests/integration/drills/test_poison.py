"""Drill: malformed bytes on every queue while a burst runs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from sqlalchemy import select

from herald import db
from herald.models import DeadLetter
from tests.integration.conftest import ROOT, wait_until
from tests.integration.drills.conftest import Drill

pytestmark = pytest.mark.drill

# Four kinds of bad message on every queue the workers consume (herald.app's queues, so a new one is included):
# raw non-JSON bytes, a task message whose body is a bare string, a JSON object with no envelope (no task
# headers), and a task message with no id header. Printed: how many were sent.
POISONER = """
import uuid
from herald.app import app
from herald.lanes import TASK_ROUTES
task_of = {queue: task for task, queue in TASK_ROUTES.items()}
sent = 0
with app.producer_or_acquire() as producer:
    for name, queue in app.amqp.queues.items():
        task = task_of.get(name, "herald.ingest")
        good_body = [[str(uuid.uuid4())], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        def put(body, headers=None, serializer="json", **kw):
            global sent
            producer.publish(body, routing_key=queue.routing_key, exchange=queue.exchange, declare=[queue],
                             headers=headers or {}, serializer=serializer, **kw)
            sent += 1
        put(b"\\x00\\xff{this is not json", serializer=None, content_type="application/json",
            content_encoding="utf-8")
        put("just a string", headers={"task": task, "id": str(uuid.uuid4()), "lang": "py"})
        put({"hello": "world"})
        put(good_body, headers={"task": task, "lang": "py"})
print(sent)
"""

REASONS = (r"^undecodable message", r"^the body is not \[args, kwargs, embed\]",
           r"not a Celery task message", r"no usable id header")


@pytest.mark.expect_dead_letters(*REASONS)
@pytest.mark.expect_log_errors(r"dead letter \d+: message", r"Can't decode message body",
                               r"Received and deleted unknown message", r"Received invalid task message")
def test_malformed_bytes_on_every_queue_end_as_dead_letters(drill: Drill) -> None:
    # given a burst under way
    burst = drill.burst(count=30, pace_s=0.05)
    wait_until(lambda: len(burst.accepted()) >= 5, timeout_s=30, message="the burst under way")
    # when four kinds of malformed message land on every queue
    done = subprocess.run([sys.executable, "-c", POISONER], cwd=ROOT, env=drill.stack.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    poisoned = int(done.stdout.strip())
    accepted = burst.wait()
    # then the burst is delivered, every pool is still the same process...
    drill.promise("malformed bytes on every queue", accepted, since=burst.started)
    # ...and each malformed message is a dead letter with its reason

    def dead() -> list[str]:
        with db.session() as s:
            return list(s.scalars(select(DeadLetter.reason).where(DeadLetter.kind == "message")))

    wait_until(lambda: len(dead()) >= poisoned, timeout_s=30, message=f"{poisoned} dead letters")
    reasons = dead()
    for pattern in REASONS:
        assert sum(1 for r in reasons if re.search(pattern, r)) >= poisoned // 4, (pattern, reasons)
    assert not drill.stack.dead()
