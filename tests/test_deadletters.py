"""Bounded attempts end in a dead letter with its reason; `herald deadletters replay` retries it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import select

from herald import db, directory
from herald.models import DeadLetter, Delivery, DeliveryAttempt
from producers import artifact_deployed, publish
from tests.conftest import DATA_DIR, ROOT, Workers, wait_until
from tests.helpers import all_done, rows


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herald", *args], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=60)


def test_transient_failures_run_out_into_a_dead_letter_that_replays(workers: Workers) -> None:
    # given a device whose provider is always unavailable, and two attempts allowed
    path = DATA_DIR / "down.yaml"
    path.write_text("people:\n  - {id: olga, name: Olga, devices: [{channel: apns, token: down-olga}]}\n"
                    "routes:\n  - {id: all, recipients: [{person: olga}]}\n")
    with db.session() as s:
        directory.apply(directory.load(path), s)
    workers.start("all", concurrency=2, kind="threads", env={"HERALD_MAX_DELIVERY_ATTEMPTS": "2"})
    event_id = publish(artifact_deployed("orders-api", kind="api", environment="dev"))
    # when the attempts run out
    wait_until(lambda: all_done([event_id]), message="target terminal")
    assert rows(select(Delivery.status, Delivery.attempts, Delivery.last_error)) == [
        ("dead", 2, "retries exhausted: Unavailable (dev channel)")]
    assert [r.outcome for r in rows(select(DeliveryAttempt.outcome).order_by(DeliveryAttempt.id))] == [
        "transient", "transient"]
    # then the dead letter says why, and the CLI lists it
    listed = json.loads(herald("deadletters", "list", "--json").stdout)
    assert [(d["kind"], d["reason"]) for d in listed] == [
        ("delivery", "1 target(s): retries exhausted after 2 attempts")]
    # and replaying it sends the target through the pipeline again
    replay = herald("deadletters", "replay")
    assert replay.returncode == 0 and replay.stdout.startswith("replayed 1 dead letter(s)")
    wait_until(lambda: len(rows(select(DeadLetter.id))) == 2, message="the replay ran out again")
    assert len(rows(select(DeliveryAttempt.id))) == 4
    first = rows(select(DeadLetter.replayed_at, DeadLetter.replay_count).order_by(DeadLetter.id))[0]
    assert first.replayed_at is not None and first.replay_count == 1
    assert json.loads(herald("deadletters", "list", "--json").stdout)[0]["id"] == 2
