"""The producer library: idempotency, the outbox inside the caller's transaction, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import cast

import pytest
import redis
from sqlalchemy import func, select, update

from herald import db
from herald.models import EventRow, Outbox
from producers import InvalidEvent, artifact_deployed, publish
from tests.integration.conftest import REDIS_URL, ROOT, SESSION, Workers, wait_until
from tests.integration.helpers import all_done, rows


def count(model: type) -> int:
    return rows(select(func.count()).select_from(model))[0][0]


def queued(queue: str = "ingest") -> int:
    return cast(int, redis.Redis.from_url(REDIS_URL).llen(f"{SESSION}:{queue}"))


def unacknowledged() -> int:
    """Messages a worker took and has not acknowledged yet (kombu's Redis transport keeps them in one hash)."""
    return cast(int, redis.Redis.from_url(REDIS_URL).hlen(f"{SESSION}:unacked"))


def test_same_idempotency_key_twice_is_one_event(workers: Workers, sample_directory: None) -> None:
    workers.start("all", concurrency=2, kind="threads")
    first = publish(artifact_deployed("orders-api", kind="api", environment="test", idempotency_key="deploy-77"))
    again = publish(artifact_deployed("orders-api", kind="api", environment="test", idempotency_key="deploy-77"))
    assert first != again
    wait_until(lambda: queued() == 0 and len(rows(select(EventRow.id))) == 1, message="both messages consumed")
    # whichever copy was ingested first is the event; the other was recognised as a duplicate
    (stored,) = rows(select(EventRow.id, EventRow.idempotency_key))
    assert stored.idempotency_key == "deploy-77" and stored.id in (first, again)
    wait_until(lambda: all_done([stored.id]))
    # and once every message was handled (acknowledged: the second copy's ingest ran to its end too), still one
    wait_until(lambda: queued() == 0 and unacknowledged() == 0, message="every message acknowledged")
    assert len(rows(select(EventRow.id))) == 1


def test_second_copy_of_an_idempotency_key_is_recognised_as_a_duplicate(clean: None) -> None:
    """persist() must know whether its INSERT went in without trusting rowcount (-1 on some drivers)."""
    from workers.ingest import persist

    first = artifact_deployed("orders-api", kind="api", environment="test", idempotency_key="dup-1")
    second = artifact_deployed("orders-api", kind="api", environment="test", idempotency_key="dup-1")
    with db.session() as s:
        assert persist(s, first) == ("received", first.id)
    with db.session() as s:
        # the first copy is still 'received' (its enrich may never have been enqueued): enrich it again
        assert persist(s, second) == ("received", first.id)
        s.execute(update(EventRow).values(status="resolved"))
    with db.session() as s:
        assert persist(s, second) == ("duplicate", first.id)
    assert rows(select(EventRow.id)) == [(first.id,)]


def test_outbox_rolled_back_publishes_nothing(workers: Workers) -> None:
    workers.start("ingest", concurrency=1, kind="threads")
    with pytest.raises(RuntimeError), db.session() as s:
        publish(artifact_deployed("orders-api", kind="api", environment="test"), session=s)
        raise RuntimeError("the caller's own work failed")
    assert count(Outbox) == 0
    assert queued() == 0 and count(EventRow) == 0


def test_outbox_committed_publishes_exactly_one(workers: Workers, sample_directory: None) -> None:
    workers.start("all", concurrency=2, kind="threads")
    with db.session() as s:
        event_id = publish(artifact_deployed("orders-api", kind="api", environment="test"), session=s)
        # inside the transaction nothing has been sent yet
        assert queued() == 0
    wait_until(lambda: all_done([event_id]))
    assert count(EventRow) == 1
    outbox = rows(select(Outbox.published_at, Outbox.ingested_at))[0]
    assert outbox.published_at is not None and outbox.ingested_at is not None


@pytest.mark.parametrize(("event", "reason"), [
    ({"type": "artifact.deployed", "environment": "dev", "data": {"kind": "api"}},
     "artifact.deployed: data.artifact: Field required"),
    ({"type": "artifact.deployed", "environment": "dev", "data": {"artifact": 42, "kind": "api"}},
     "artifact.deployed: data.artifact: Input should be a valid string"),
    ({"type": "artifact.exploded", "environment": "dev", "data": {}},
     "unknown event type 'artifact.exploded'"),
    ({"type": "flow.failed", "environment": "dev", "data": {"flow": "x", "error": "e" * 70_000}},
     "data is 70026 bytes, over the limit of 65536 bytes"),
    ({"type": "flow.failed", "environment": "staging", "data": {"flow": "x"}},
     "unknown environment 'staging' (known: dev, test, prod)"),
    ({"type": "flow.failed", "data": {"flow": "x"}}, "environment: Field required"),
    ({"type": "approval.requested", "environment": "dev",
      "data": {"request_kind": "api", "target": "t", "requester": "a", "expires_at": "2026-12-01T10:00:00"}},
     "approval.requested: data.expires_at: expires_at needs a timezone"),
])
def test_bad_events_are_refused_at_the_edge_and_nothing_is_written(clean: None, event: dict, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        publish(event)
    assert str(caught.value).startswith(reason)
    with pytest.raises(InvalidEvent), db.session() as s:
        publish(event, session=s)
    assert queued() == 0 and count(Outbox) == 0 and count(EventRow) == 0


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=60)


def test_cli_publish_prints_the_id_or_exits_2_with_one_line(workers: Workers, sample_directory: None) -> None:
    bad = herald("publish", "artifact.deployed", "--environment", "dev", "--data", '{"artifact": "x"}')
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "herald: invalid event: artifact.deployed: data.kind: Field required"]
    not_json = herald("publish", "artifact.deployed", "--data", "{artifact: x}")
    assert not_json.returncode == 2 and "--data is not valid JSON" in not_json.stderr
    assert queued() == 0
    workers.start("all", concurrency=2, kind="threads")
    good = herald("publish", "artifact.deployed", "--environment", "test", "--idempotency-key", "cli-1",
                  "--data", '{"artifact": "orders-api", "kind": "api"}')
    assert good.returncode == 0, good.stderr
    event_id = good.stdout.strip()
    wait_until(lambda: all_done([uuid.UUID(event_id)]))
    shown = herald("events", "show", event_id, "--json")
    assert shown.returncode == 0
    import json

    trace = json.loads(shown.stdout)
    assert trace["event"]["idempotency_key"] == "cli-1"
    sent = [d for n in trace["notifications"] for d in n["deliveries"] if d["status"] == "sent"]
    assert sent and all(d["attempts"][-1]["outcome"] == "sent" for d in sent)
    assert {n["reason"] for n in trace["notifications"]} >= {"route artifact-changes: team:integration-leads"}


def test_outbox_inside_a_savepoint_is_relayed_after_the_real_commit(clean: None) -> None:
    # given an event published inside a SAVEPOINT of the caller's transaction
    with db.session() as s:
        with s.begin_nested():
            publish(artifact_deployed("orders-api", kind="api", environment="test"), session=s)
        # releasing the savepoint is not the commit: nothing is sent yet
        assert queued() == 0
    # then the real commit relays it once
    assert queued() == 1
    assert rows(select(Outbox.published_at))[0][0] is not None


def test_direct_publish_records_the_event_in_the_outbox_before_the_broker_has_it(clean: None) -> None:
    # given a producer with herald's database (as in the tests), when it publishes directly
    event_id = publish(artifact_deployed("orders-api", kind="api", environment="test"))
    # then the event is queued AND recorded, not yet ingested: the outbox sweep republishes it if the broker loses it
    assert queued() == 1
    (row,) = rows(select(Outbox.id, Outbox.ingested_at, Outbox.publish_attempts))
    assert row.id == event_id and row.ingested_at is None and row.publish_attempts == 1


def test_publish_many_records_every_event_in_one_transaction_and_sends_each(clean: None) -> None:
    from herald.publishing import publish_many

    events = [artifact_deployed(f"api-{i}", kind="api", environment="test") for i in range(5)]
    ids = publish_many(events)
    assert ids == [e.id for e in events]
    assert queued() == 5 and count(Outbox) == 5
    # a bad event anywhere refuses the whole batch before anything is written or sent
    with pytest.raises(InvalidEvent):
        publish_many([artifact_deployed("x", kind="api", environment="test"), {"type": "artifact.deployed"}])
    assert queued() == 5 and count(Outbox) == 5


def _producer(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


def test_direct_publish_without_a_reachable_database_still_publishes_on_the_brokers_confirm(clean: None) -> None:
    # given a producer whose database is down (nothing listens on that port)
    done = _producer("from producers import publish, artifact_deployed\n"
                     "print(publish(artifact_deployed('orders-api', kind='api', environment='test')))\n",
                     {"HERALD_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5499/nothing"})
    # then the event is published, and the producer says what holds for it
    assert done.returncode == 0, done.stderr
    assert queued() == 1 and count(Outbox) == 0
    assert "published with the broker's confirm only" in done.stderr


def test_direct_publish_the_broker_refused_leaves_no_outbox_row_behind(clean: None) -> None:
    # given a producer whose broker is down: the event is refused (BrokerUnavailable) ...
    done = _producer("from producers import publish, artifact_deployed, BrokerUnavailable\n"
                     "try:\n"
                     "    publish(artifact_deployed('orders-api', kind='api', environment='test'))\n"
                     "except BrokerUnavailable as exc:\n"
                     "    print('raised:', exc)\n", {"HERALD_BROKER_URL": "redis://127.0.0.1:6399/0"})
    assert done.returncode == 0 and done.stdout.startswith("raised:"), done.stderr
    # ... so the outbox sweep must not publish it behind the caller's back
    assert count(Outbox) == 0
