"""Bounded attempts end in a dead letter with its reason; `herald deadletters replay` retries it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from herald import db, deadletters, directory
from herald.models import DeadLetter, Delivery, DeliveryAttempt, Device
from producers import artifact_deployed, publish
from tests.integration.conftest import DATA_DIR, ROOT, TEST_ENV, Workers, wait_until
from tests.integration.helpers import all_done, rows

ONE_DOWN_DEVICE = """\
people:
  - {id: olga, name: Olga, devices: [{channel: fcm, token: down-olga, app: com.example.admin}]}
routes:
  - {id: all, recipients: [{person: olga}]}
"""


def start_with_one_down_device(workers: Workers, *, attempts: int, concurrency: int,
                               spec: str = ONE_DOWN_DEVICE) -> None:
    """Olga, whose one device's provider is always unavailable, and workers allowing ``attempts`` per target."""
    path = DATA_DIR / "down.yaml"
    path.write_text(spec)
    with db.session() as s:
        directory.apply(directory.load(path), s)
    workers.start("all", concurrency=concurrency, kind="threads",
                  env={"HERALD_MAX_DELIVERY_ATTEMPTS": str(attempts)})


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.expect_dead_letters(r"^1 target\(s\): retries exhausted after 2 attempts$")
@pytest.mark.expect_log_errors(r"dead letter \d+: delivery")
def test_transient_failures_run_out_into_a_dead_letter_that_replays(workers: Workers) -> None:
    # given a device whose provider is always unavailable, and two attempts allowed
    start_with_one_down_device(workers, attempts=2, concurrency=2)
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


def sends_of(delivery_id: int) -> list[str]:
    """What the dev channel wrote for one delivery: one line per request it made."""
    out = Path(TEST_ENV["HERALD_DEV_OUTPUT"])
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return [line["outcome"] for line in lines if line["delivery_id"] == delivery_id]


@pytest.mark.expect_dead_letters(r"^1 target\(s\): retries exhausted after 1 attempts$")
@pytest.mark.expect_log_errors(r"dead letter \d+: delivery")
def test_replaying_a_dead_letter_again_never_resends_a_target_already_sent(workers: Workers) -> None:
    # given a target dead-lettered while its provider was down, one attempt allowed
    start_with_one_down_device(workers, attempts=1, concurrency=1)
    first = publish(artifact_deployed("orders-api", kind="api", environment="dev"))
    wait_until(lambda: all_done([first]), message="target dead")
    [(delivery_id, status)] = rows(select(Delivery.id, Delivery.status))
    assert status == "dead" and sends_of(delivery_id) == ["transient"]
    [letter] = rows(select(DeadLetter.id))
    # and the provider is back (the device answers now)
    with db.session() as s:
        s.execute(update(Device).values(token="ok-olga"))
    # when the dead letter is replayed, the target is sent
    assert deadletters.replay([letter.id]) == [letter.id]
    wait_until(lambda: rows(select(Delivery.status)) == [("sent",)], message="the replay sent the target")
    # and when it is replayed three more times
    for _ in range(3):
        assert deadletters.replay([letter.id]) == [letter.id]
        # then the sent target stays sent: nothing is put back to pending
        assert rows(select(Delivery.status, Delivery.attempts)) == [("sent", 1)]
    # and (once a later event went through the same channel) the target was sent exactly once
    later = publish(artifact_deployed("billing-api", kind="api", environment="dev"))
    wait_until(lambda: all_done([later]), message="a later event delivered")
    assert sends_of(delivery_id) == ["transient", "sent"]
    assert rows(select(DeadLetter.replay_count)) == [(4,)]
