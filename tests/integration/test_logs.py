"""Log lines cannot be forged, in a real worker too: a task id that holds a newline and a whole entry is written as
one line (the formatting rules: tests/unit/test_logs.py)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import event_status

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
