"""Log lines cannot be forged, in a real worker too: a task id that holds a newline and a whole entry is written as
one line (the formatting rules: tests/unit/test_logs.py). With HERALD_LOG_FORMAT=json a worker writes one JSON
object per line, with the ids of what it did as fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from herald.models import Delivery
from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import all_done, event_status, rows

FORGED = "[2026-01-01 00:00:00,000: INFO/MainProcess] Task herald.ingest[x] succeeded in 0.01s: None"


def test_a_worker_writes_a_forged_task_id_as_one_line(workers: Workers) -> None:
    # given a real ingest worker, whose logging Celery sets up (after_setup_logger -> logs.install)
    from herald.app import app
    from producers import artifact_deployed

    worker = workers.start("ingest", concurrency=1)
    event = artifact_deployed("orders-api", kind="api", environment="dev")
    # when a broker message's task id holds a newline and a whole forged entry
    app.send_task("herald.ingest", args=[event.to_json()], task_id=f"forged\n{FORGED}")
    wait_until(lambda: event_status(event.id) is not None, message="the event ingested")
    log_path = Path(f"/proc/{worker.pid}/fd/1").resolve()
    wait_until(lambda: "succeeded" in log_path.read_text(), message="the task's success logged")
    # then the forged text appears only escaped, inside the worker's own entries
    text = log_path.read_text()
    assert f"forged\\n{FORGED}" in text
    assert not any(line.startswith(FORGED) for line in text.splitlines())


def test_a_worker_with_json_logs_writes_the_ids_of_a_real_delivery(workers: Workers, sample_directory: None) -> None:
    # given a worker (every pool, with beat) started with HERALD_LOG_FORMAT=json
    from producers import artifact_deployed, publish

    worker = workers.start("all", concurrency=4, kind="threads", beat=True, env={"HERALD_LOG_FORMAT": "json"})
    log_path = Path(f"/proc/{worker.pid}/fd/1").resolve()
    # when an event goes through the whole pipeline to the phones
    event_id = publish(artifact_deployed("orders-api", kind="api", environment="test", version="2.4"))
    wait_until(lambda: all_done([event_id]), message="the event delivered")
    batches = {str(b) for (b,) in rows(select(Delivery.batch_id).where(Delivery.event_id == event_id))}

    def entries() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]

    wait_until(lambda: batches <= {e.get("batch_id") for e in entries()}, message="every batch logged")
    # then every line of its log is one JSON object (no banner, no text line) ...
    found = entries()
    assert all({"time", "level", "logger", "message"} <= set(e) for e in found)
    # ... and the entries about this event carry its id, the task's name and id as fields
    ingested = [e for e in found if e.get("event_id") == str(event_id) and e["logger"] == "workers.ingest"]
    assert ingested and ingested[0]["task_name"] == "herald.ingest" and ingested[0]["task_id"]
    resolved = [e for e in found if e.get("event_id") == str(event_id) and e["logger"] == "workers.resolve"]
    assert resolved and resolved[0]["task_name"] == "herald.resolve"
    sent = [e for e in found if e.get("batch_id") in batches]
    assert {e["task_name"] for e in sent} <= {"herald.deliver.fcm", "herald.deliver.apns", "herald.deliver.webpush",
                                              "herald.deliver.retry"}
    assert all(e["task_id"] for e in sent)
    # and beat's entries are JSON too
    assert any(e["logger"].startswith("celery.beat") for e in found)
