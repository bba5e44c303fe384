"""Any message a worker can receive ends in the dead-letter table, never in a crash loop; the dead-letter
path keeps what Postgres cannot store as JSON; a database outage while dead-lettering loses nothing."""

from __future__ import annotations

import json
import os
import signal
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from herald import db, deadletters
from herald.models import DeadLetter
from producers import artifact_deployed, publish
from tests.integration.conftest import _WORKER_LOGS, Workers, wait_until
from tests.integration.helpers import all_done, rows

DEAD_DB = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1


def publish_raw(body: bytes | str, *, headers: dict[str, Any] | None = None, queue_name: str = "ingest") -> None:
    """Put one message on a queue as any client could, bypassing Celery's own message building."""
    from herald.app import app

    with app.producer_or_acquire() as producer:
        queue = app.amqp.queues[queue_name]
        producer.publish(body, routing_key=queue_name, exchange=queue.exchange, declare=[queue],
                         headers=headers or {}, content_type="application/json", content_encoding="utf-8")


def good_envelope() -> dict[str, Any]:
    return artifact_deployed("orders-api", kind="api", environment="test").to_json()


def letters() -> list[Any]:
    return rows(select(DeadLetter.kind, DeadLetter.reason, DeadLetter.task_name, DeadLetter.ref, DeadLetter.body)
                .order_by(DeadLetter.id))


@pytest.mark.expect_dead_letters(r"no usable id header", r"^undecodable message", r"body is not \[args, kwargs",
                                 r"not a Celery task message")
@pytest.mark.expect_log_errors(r"dead letter \d+: message")
def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_running(workers: Workers,
                                                                           sample_directory: None) -> None:
    proc = workers.start("ingest,enrich,resolve,deliver.apns,deliver.fcm,deliver.webpush,retry", concurrency=1,
                         kind="prefork")
    # given, on the ingest queue: a herald task with no id header (it used to kill the worker, and every
    # restarted one), raw bytes that are not JSON, a valid envelope whose body is a bare string, and a
    # JSON object with no envelope at all
    publish_raw(json.dumps([[good_envelope()], {}, {}]), headers={"task": "herald.ingest", "lang": "py"})
    publish_raw(b"\x00\xff not json at all")
    publish_raw(json.dumps("just a string"), headers={"task": "herald.ingest", "id": str(uuid.uuid4())})
    publish_raw(json.dumps({"hello": "world"}))
    # when a good event follows them
    good = publish(artifact_deployed("orders-api", kind="api", environment="test"))
    # then the good event goes all the way through, by the same worker process
    wait_until(lambda: all_done([good]), message="the good event delivered")
    wait_until(lambda: len(letters()) >= 4, message="four dead letters")
    assert proc.poll() is None
    # and each malformed message is a dead letter with its reason and its raw body
    found = letters()
    assert len(found) == 4 and {r.kind for r in found} == {"message"}

    def one(prefix: str) -> Any:
        [letter] = [r for r in found if r.reason.startswith(prefix)]
        return letter

    no_id = one("task message with no usable id header")
    assert no_id.task_name == "herald.ingest" and no_id.ref["headers"]["task"] == "herald.ingest"
    assert json.loads(no_id.body)[0][0]["type"] == "artifact.deployed"
    raw = one("undecodable message")
    assert raw.ref["body_encoding"] == "base64"  # NUL and invalid UTF-8: kept exactly, as base64
    assert one("the body is not [args, kwargs, embed] but str").body == '"just a string"'
    assert one("message is not a Celery task message").body == '{"hello": "world"}'


@pytest.mark.expect_dead_letters(r"no usable id header")
@pytest.mark.expect_log_errors(r"dead letter \d+: message")
def test_a_restarted_worker_does_not_die_on_the_message_either(workers: Workers) -> None:
    # given a message without an id header waiting before any worker runs
    publish_raw(json.dumps([["x"], {}, {}]), headers={"task": "herald.enrich"}, queue_name="enrich")
    # when a worker starts on its queue, twice
    first = workers.start("enrich", concurrency=1, kind="solo")
    wait_until(lambda: len(letters()) == 1, message="the message dead-lettered")
    assert first.poll() is None
    workers.kill(first)
    second = workers.start("enrich", concurrency=1, kind="solo")
    # then the message was taken once: the second worker finds nothing to choke on
    publish_raw(json.dumps([["y"], {}, {}]), headers={"task": "herald.enrich"}, queue_name="enrich")
    wait_until(lambda: len(letters()) == 2, message="the second message dead-lettered")
    assert second.poll() is None


@pytest.mark.expect_dead_letters(r"\\x00|\\u0000|NUL|0x00")
@pytest.mark.expect_log_errors(r"dead letter \d+: task", r"dead-lettered")
def test_an_event_postgres_cannot_store_is_still_dead_lettered_whole(workers: Workers) -> None:
    from herald.app import app

    workers.start("ingest", concurrency=1, kind="solo")
    # given an event whose data holds a NUL character, sent past the producer's checks
    envelope = good_envelope()
    envelope["data"]["summary"] = "before\x00after"
    app.send_task("herald.ingest", args=[envelope])
    # then it is a dead letter, not lost: the event is kept whole and its reason is readable text
    wait_until(lambda: len(letters()) == 1, message="the event dead-lettered")
    with db.session() as s:
        row = s.scalars(select(DeadLetter)).one()
        kept = deadletters.original_ref(row)
    assert row.kind == "task" and row.task_name == "herald.ingest" and "\x00" not in row.reason
    assert kept["args"] == [envelope]


@pytest.mark.expect_dead_letters(r"^bad\\x00reason$", r"^raw$", r"^text$")
def test_what_postgres_cannot_store_goes_to_the_body_and_back(clean: None) -> None:
    # given refs and bodies holding what jsonb or text refuse: NUL, a lone surrogate, NaN, bytes
    ref = {"args": [{"data": {"a": "x\x00y", "b": "\ud800", "c": float("nan")}}], "task_id": "t-1"}
    first = deadletters.record("task", "bad\x00reason", task_name="herald.ingest\x00", ref=ref)
    second = deadletters.record("message", "raw", body=b"\x00\xff\xfe")
    third = deadletters.record("message", "text", body="plain text", ref={"headers": {"task": "x"}})
    with db.session() as s:
        one, two, three = (s.get_one(DeadLetter, i) for i in (first, second, third))
        assert one.reason == "bad\\x00reason" and one.task_name == "herald.ingest\\x00"
        restored = deadletters.original_ref(one)
        assert restored["args"][0]["data"]["a"] == "x\x00y" and restored["task_id"] == "t-1"
        assert two.ref == {"body_encoding": "base64"} and two.body == "AP/+"
        assert three.ref == {"headers": {"task": "x"}} and three.body == "plain text"


@pytest.mark.expect_dead_letters(r"^InvalidEvent")
@pytest.mark.expect_log_errors(r"dead letter \d+: task", r"dead-lettered")
def test_a_task_that_cannot_be_dead_lettered_while_the_database_is_down_is_not_acknowledged(
        workers: Workers) -> None:
    from herald.app import app

    # given an ingest worker whose database is down, and an event that can never be stored
    down = workers.start("ingest", concurrency=1, kind="solo", env={"HERALD_DATABASE_URL": DEAD_DB})
    app.send_task("herald.ingest", args=[{"type": "artifact.deployed", "data": {}}])
    # when a worker with a database comes up on the retry queue
    wait_until(lambda: down.poll() is None and _retry_waiting(), timeout_s=60,
               message="the task sent to the retry queue, not acknowledged as done")
    workers.start("retry", concurrency=1, kind="solo")
    # then the event ends in the dead-letter table with its reason: it was never dropped
    wait_until(lambda: len(letters()) == 1, message="the dead letter written once the database answers")
    assert letters()[0].reason.startswith("InvalidEvent")
    assert down.poll() is None


def _retry_waiting() -> bool:
    """A message waits on the retry queue (no worker consumes it yet)."""
    import redis

    from tests.integration.conftest import REDIS_URL, SESSION

    return bool(redis.Redis.from_url(REDIS_URL).llen(f"{SESSION}:retry"))


@pytest.mark.expect_dead_letters(r"no usable id header")
@pytest.mark.expect_log_errors(r"could not dead-letter a malformed message", r"dead letter \d+: message")
def test_a_malformed_message_waits_out_a_database_outage(workers: Workers) -> None:
    # given a worker whose database is down receives a malformed message
    down = workers.start("enrich", concurrency=1, kind="solo", env={"HERALD_DATABASE_URL": DEAD_DB})
    log = _WORKER_LOGS[-1]
    publish_raw(json.dumps([["x"], {}, {}]), headers={"task": "herald.enrich"}, queue_name="enrich")
    wait_until(lambda: log.exists() and "could not dead-letter" in log.read_text(),
               message="the worker tried to dead-letter it")
    # when that worker stops (as an operator's kill does) and one with a database takes over
    os.kill(down.pid, signal.SIGTERM)
    down.wait(timeout=30)
    assert letters() == []
    workers.start("enrich", concurrency=1, kind="solo")
    # then the message was not dropped: it is a dead letter now
    wait_until(lambda: len(letters()) == 1, message="the message dead-lettered once the database answers")
    assert letters()[0].reason.startswith("task message with no usable id header")
