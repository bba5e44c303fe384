"""Flower shows ids, never bodies: the Celery events of an ingest task (Flower's task view is made of them) and its
message headers name the event by id and type, and hold nothing of its data."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.signals import before_task_publish

from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import event_status

SECRET = f"password=hunter2-{uuid.uuid4().hex}"


class Events:
    """A `celery events` receiver in a thread: every event the broker fans out, as Flower gets them."""

    def __init__(self) -> None:
        from herald.app import app

        self.seen: list[dict[str, Any]] = []
        self.connection = app.connection_for_read()
        self.receiver = app.events.Receiver(self.connection, handlers={"*": self.seen.append})
        self.thread = threading.Thread(target=self.receiver.capture, kwargs={"wakeup": False}, daemon=True)

    def of(self, kind: str, task_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if e.get("type") == kind and e.get("uuid") == task_id]

    def containing(self, text: str) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if text in json.dumps(e, default=str)]


@pytest.fixture
def events(workers: Workers) -> Iterator[Events]:
    receiver = Events()
    receiver.thread.start()
    yield receiver
    receiver.receiver.should_stop = True
    receiver.thread.join(timeout=10)
    receiver.connection.release()


@pytest.fixture
def sent_headers() -> Iterator[dict[str, dict[str, Any]]]:
    """The headers of every task message this process sends (protocol 2: ``argsrepr`` is one of them)."""
    kept: dict[str, dict[str, Any]] = {}

    def keep(headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is not None:
            kept[headers["id"]] = dict(headers)

    before_task_publish.connect(keep, weak=False)
    yield kept
    before_task_publish.disconnect(keep)


def test_the_task_events_of_an_ingest_show_the_event_id_never_its_data(
        workers: Workers, events: Events, sent_headers: dict[str, dict[str, Any]]) -> None:
    from herald.app import app
    from producers import flow_failed, publish

    # given an events receiver (Flower's view), listening once a worker's own events reach it
    workers.start("all", concurrency=2, kind="threads")
    wait_until(lambda: any(e.get("type", "").startswith("worker-") for e in list(events.seen)),
               message="the worker's events received")
    # when a producer publishes an event whose data holds a secret (through the outbox), and someone sends an
    # ingest task of their own with a whole event (as Flower's "apply" or a dead letter's replay does)
    event_id = publish(flow_failed("orders-to-erp", environment="prod", error=SECRET))
    other = flow_failed("billing-sync", environment="prod", error=SECRET)
    direct = app.send_task("herald.ingest", args=[other.to_json()])
    wait_until(lambda: event_status(event_id) and event_status(other.id), message="both events ingested")
    ingests = {h["id"]: h for h in sent_headers.values() if h["task"] == "herald.ingest"}

    def all_ran() -> bool:
        return all(events.of("task-received", t) and events.of("task-succeeded", t) for t in ingests)

    wait_until(all_ran, message="each task's received and succeeded events")
    # then each message's argsrepr names its event by id and type only ...
    shown = {task_id: h["argsrepr"] for task_id, h in ingests.items()}
    assert repr([{"id": str(event_id), "type": "flow.failed"}]) in shown.values()
    assert shown[direct.id] == repr([{"id": str(other.id), "type": "flow.failed"}])
    assert all(h["kwargsrepr"] == "{}" and SECRET not in json.dumps(h, default=str) for h in ingests.values())
    # ... the task-sent and task-received events (what Flower shows as the arguments) carry that, not the body
    task_events = [e for t in ingests for kind in ("task-sent", "task-received") for e in events.of(kind, t)]
    assert {e["uuid"] for e in task_events} == set(ingests)
    assert all(e["args"] == shown[e["uuid"]] and e["kwargs"] == "{}" for e in task_events)
    # and no event the broker carried holds the secret
    assert events.containing(str(event_id)) and events.containing(SECRET) == []
