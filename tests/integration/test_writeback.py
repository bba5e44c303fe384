"""Write-back webhooks on real Postgres, to the local receiver that verifies every signature (devtools/receiver.py).

Time is moved by passing ``now`` to the delivery, never by sleeping; the signature always carries the real time.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from devtools.fakes.testing import herald_env
from devtools.receiver import Receiver
from herald import db, directory, writeback
from herald.errors import DirectoryError
from herald.models import OpsCondition, WebhookAttempt, WebhookEndpoint, WebhookMessage, utcnow
from tests.integration.conftest import ROOT, Workers, wait_until

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
SECRET_VAR = "HERALD_TEST_WEBHOOK_SECRET"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def env(clean: None) -> Iterator[dict[str, str]]:
    values = {"HERALD_WEBHOOK_ALLOW_LOOPBACK": "true", SECRET_VAR: SECRET, "HERALD_WEBHOOK_TIMEOUT_S": "3"}
    with herald_env(values):
        yield values


@pytest.fixture
def receiver(env: dict[str, str]) -> Iterator[Receiver]:
    with Receiver(SECRET) as r:
        yield r


def endpoint(url: str, *, id: str = "admin-prod", environment: str = "prod", kinds: list[str] | None = None,
             secret: str = f"env:{SECRET_VAR}") -> dict[str, Any]:
    return {"id": id, "environment": environment, "url": url, "secret": secret,
            "kinds": kinds or ["incident.*", "approval.*"]}


def apply_webhooks(tmp_path: Path, *endpoints: dict[str, Any]) -> Path:
    path = tmp_path / "directory.yaml"
    path.write_text(json.dumps({"webhooks": list(endpoints)}))  # JSON is YAML
    with db.session() as s:
        directory.apply(directory.load(path), s)
    return path


def record(kind: str, subject: str, environment: str = "prod", **data: Any) -> int:
    with db.session() as s:
        return writeback.record(s, environment=environment, kind=kind, subject=subject, data=data)


def messages() -> list[WebhookMessage]:
    with db.session() as s:
        return list(s.scalars(select(WebhookMessage).order_by(WebhookMessage.id)))


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=60)


def test_a_change_is_signed_and_the_receiver_verifies_it(receiver: Receiver, tmp_path: Path) -> None:
    # given an endpoint of prod that wants incident changes
    apply_webhooks(tmp_path, endpoint(f"{receiver.url}/hooks"))
    # when an answer records one, and the pool delivers
    assert record("incident.acknowledged", "incident:12", incident_id=12, by="chen") == 1
    counts = writeback.deliver_due()
    # then the receiver verified the signature and got the change
    assert counts["delivered"] == 1
    [got] = receiver.received
    assert got.error is None and got.answered == 204
    [message] = messages()
    assert got.payload == {"type": "incident.acknowledged", "environment": "prod", "subject": "incident:12",
                           "timestamp": message.created_at.isoformat(), "data": {"incident_id": 12, "by": "chen"}}
    assert got.webhook_id == f"msg_{message.id}"
    assert message.status == "delivered" and message.attempts == 1
    with db.session() as s:
        [attempt] = s.scalars(select(WebhookAttempt)).all()
        assert (attempt.status_code, attempt.error) == (204, None)


def test_a_receiver_with_another_secret_refuses_and_the_message_waits(env: dict[str, str], tmp_path: Path) -> None:
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with Receiver(other) as wrong:
        apply_webhooks(tmp_path, endpoint(wrong.url))
        record("approval.approved", "approval:7")
        counts = writeback.deliver_due()
    assert counts["retrying"] == 1
    assert [r.answered for r in wrong.received] == [401]
    [message] = messages()
    assert message.status == "pending" and message.last_error == "HTTP 401: "


def test_only_the_environment_and_kinds_an_endpoint_asked_for(receiver: Receiver, tmp_path: Path) -> None:
    apply_webhooks(tmp_path, endpoint(receiver.url, id="admin-prod", kinds=["approval.*"]),
                   endpoint(receiver.url, id="admin-dev", environment="dev"))
    assert record("incident.resolved", "incident:1", environment="prod") == 0
    assert record("approval.expired", "approval:3", environment="prod") == 1
    assert record("incident.resolved", "incident:1", environment="dev") == 1
    assert record("incident.resolved", "incident:1", environment="test") == 0
    assert {(m.endpoint_id, m.kind) for m in messages()} == {("admin-prod", "approval.expired"),
                                                              ("admin-dev", "incident.resolved")}


def test_a_receiver_down_for_a_while_then_up_gets_everything_in_order(env: dict[str, str], tmp_path: Path) -> None:
    # given a receiver that is not listening yet, and changes to two subjects
    port = free_port()
    apply_webhooks(tmp_path, endpoint(f"http://127.0.0.1:{port}/hooks"))
    for kind in ("incident.acknowledged", "incident.reassigned", "incident.resolved"):
        record(kind, "incident:1")
    for kind in ("approval.info_requested", "approval.approved"):
        record(kind, "approval:2")
    now = utcnow()
    # when the pool runs while it is down: only the first message of each subject is tried
    down = writeback.deliver_due(now)
    assert (down["claimed"], down["retrying"], down["delivered"]) == (2, 2, 0)
    assert [m.attempts for m in messages()] == [1, 0, 0, 1, 0]
    # and again later, still down
    writeback.deliver_due(now + timedelta(hours=1))
    # then, once it is up, everything arrives, each subject in its order, nothing twice
    with Receiver(SECRET, port=port) as up:
        counts = writeback.deliver_due(now + timedelta(hours=3))
        assert counts["delivered"] == 5
        got = [(p["subject"], p["type"]) for p in up.verified]
    assert [k for s, k in got if s == "incident:1"] == ["incident.acknowledged", "incident.reassigned",
                                                        "incident.resolved"]
    assert [k for s, k in got if s == "approval:2"] == ["approval.info_requested", "approval.approved"]
    assert {m.status for m in messages()} == {"delivered"}
    with db.session() as s:
        refused = s.scalars(select(WebhookAttempt.error).where(WebhookAttempt.status_code.is_(None))).all()
    assert len(refused) == 4 and all(e and "Connect" in e for e in refused)


def test_retries_stop_at_the_horizon_then_failed_reported_and_replayed(receiver: Receiver, tmp_path: Path) -> None:
    # given a receiver answering 503
    receiver.answer = 503
    apply_webhooks(tmp_path, endpoint(receiver.url))
    record("approval.rejected", "approval:9")
    now = utcnow()
    assert writeback.deliver_due(now)["retrying"] == 1
    # when it still fails a day later
    assert writeback.deliver_due(now + timedelta(hours=24, minutes=1))["failed"] == 1
    # then the message is failed, and reported by `herald webhooks list` and `herald status`
    [message] = messages()
    assert message.status == "failed" and message.attempts == 2
    listed = herald("webhooks", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [state] = json.loads(listed.stdout)
    assert (state["id"], state["state"], state["failed"], state["pending"]) == ("admin-prod", "active", 1, 0)
    listed = herald("webhooks", "messages", "--status", "failed", "--json")
    [failed] = json.loads(listed.stdout)
    assert (failed["id"], failed["subject"], failed["last_error"]) == (message.id, "approval:9", "HTTP 503: ")
    status = herald("status", "--json")
    assert {(c["condition"], c["resource"]) for c in json.loads(status.stdout)["raised"]} >= {
        (writeback.FAILED, "admin-prod")}
    # when an operator replays it, once the receiver is back
    receiver.answer = 200
    replayed = herald("webhooks", "replay", "--failed", "--endpoint", "admin-prod")
    assert replayed.returncode == 0, replayed.stderr
    assert writeback.deliver_due()["delivered"] == 1
    assert [m.status for m in messages()] == ["delivered"]
    assert [(r.answered, r.webhook_id) for r in receiver.received] == [(503, f"msg_{message.id}")] * 2 + [
        (200, f"msg_{message.id}")]
    with db.session() as s:
        condition = s.get(OpsCondition, (writeback.FAILED, "admin-prod"))
        assert condition is not None and not condition.raised


def test_410_disables_the_endpoint_cancels_its_pending_messages_and_is_reported(receiver: Receiver,
                                                                               tmp_path: Path) -> None:
    receiver.answer = 410
    apply_webhooks(tmp_path, endpoint(receiver.url))
    for subject in ("incident:1", "incident:1", "incident:2"):
        record("incident.escalated", subject)
    counts = writeback.deliver_due()
    assert counts["disabled"] >= 1
    assert {m.status for m in messages()} == {"cancelled"}
    with db.session() as s:
        row = s.get(WebhookEndpoint, "admin-prod")
        assert row is not None and row.disabled_at is not None and "410" in (row.disabled_reason or "")
        condition = s.get(OpsCondition, (writeback.DISABLED, "admin-prod"))
        assert condition is not None and condition.raised
    # nothing more is queued for it, and the list says why
    assert record("incident.resolved", "incident:1") == 0
    [state] = json.loads(herald("webhooks", "list", "--json").stdout)
    assert state["state"] == "disabled" and "410" in state["disabled_reason"]
    # until it is enabled again
    assert herald("webhooks", "enable", "admin-prod").returncode == 0
    assert record("incident.resolved", "incident:1") == 1


@pytest.mark.parametrize(("url", "reason"), [
    ("http://admin.example.com/hooks", "https"),
    ("https://10.1.2.3/hooks", "not public"),
    ("https://169.254.169.254/latest/meta-data", "not public"),
    ("https://user:pw@admin.example.com/hooks", "user name"),
    ("https://127.1/hooks", "not a domain name"),
    ("http://127.0.0.1:8765/hooks", "HERALD_WEBHOOK_ALLOW_LOOPBACK"),
])
def test_a_bad_url_is_refused_when_the_directory_is_loaded(tmp_path: Path, url: str, reason: str) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("webhooks:\n" + f"  - {json.dumps(endpoint(url))}\n")
    with herald_env({"HERALD_WEBHOOK_ALLOW_LOOPBACK": "false"}), pytest.raises(DirectoryError) as refused:
        directory.load(path)
    [problem] = refused.value.problems
    assert problem.startswith(f"{path}:2: webhooks[0].url: ") and reason in problem


def test_a_secret_written_into_the_file_is_refused_without_being_echoed(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("webhooks:\n" + f"  - {json.dumps(endpoint('https://admin.example.com/h', secret=SECRET))}\n")
    with pytest.raises(DirectoryError) as refused:
        directory.load(path)
    assert "env:NAME or file:" in str(refused.value) and SECRET not in str(refused.value)


def test_the_secret_is_never_logged_nor_stored(receiver: Receiver, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    apply_webhooks(tmp_path, endpoint(receiver.url, id="by-env"),
                   endpoint(receiver.url, id="by-file", secret=f"file:{secret_file}"),
                   endpoint(receiver.url, id="unset", secret="env:HERALD_TEST_WEBHOOK_UNSET"))
    record("incident.acknowledged", "incident:5")
    counts = writeback.deliver_due()
    assert (counts["delivered"], counts["retrying"]) == (2, 1)
    unset = next(m for m in messages() if m.endpoint_id == "unset")
    assert unset.last_error == "not sent: the webhook secret variable HERALD_TEST_WEBHOOK_UNSET is not set"
    raw = SECRET.removeprefix("whsec_")
    with db.session() as s:
        dumped = " ".join(str(r[0]) for table in ("webhook_endpoints", "webhook_messages", "webhook_attempts")
                          for r in s.execute(text(f"SELECT row_to_json(t) FROM {table} t")))
    assert "env:HERALD_TEST_WEBHOOK_SECRET" in dumped  # the reference is stored...
    assert raw not in dumped and raw not in caplog.text  # ...never the secret


def test_replay_of_a_delivered_message_sends_it_again_with_the_same_id(receiver: Receiver, tmp_path: Path) -> None:
    apply_webhooks(tmp_path, endpoint(receiver.url))
    record("incident.follow_up_requested", "incident:8")
    writeback.deliver_due()
    [message] = messages()
    assert herald("webhooks", "replay", str(message.id)).returncode == 0
    assert herald("webhooks", "replay", str(message.id)).returncode == 2  # pending now: nothing to replay
    writeback.deliver_due()
    assert [r.webhook_id for r in receiver.received] == [f"msg_{message.id}"] * 2


def test_an_endpoint_removed_from_the_file_is_inactive_and_its_pending_messages_cancelled(
        env: dict[str, str], tmp_path: Path) -> None:
    apply_webhooks(tmp_path, endpoint(f"http://127.0.0.1:{free_port()}/h"))
    record("incident.acknowledged", "incident:3")
    apply_webhooks(tmp_path)
    [message] = messages()
    assert message.status == "cancelled"
    [state] = json.loads(herald("webhooks", "list", "--json").stdout)
    assert state["state"] == "removed"
    assert record("incident.resolved", "incident:3") == 0


def test_webhooks_test_sends_a_signed_message_and_prints_the_answer(receiver: Receiver, tmp_path: Path) -> None:
    apply_webhooks(tmp_path, endpoint(receiver.url))
    done = herald("webhooks", "test", "admin-prod")
    assert done.returncode == 0, done.stderr
    assert "admin-prod: HTTP 204" in done.stdout
    [got] = receiver.verified
    assert got["type"] == "webhook.test"
    receiver.answer = 500
    assert herald("webhooks", "test", "admin-prod").returncode == 1
    assert len({r.webhook_id for r in receiver.received}) == 2  # never skipped by a receiver as already seen
    assert herald("webhooks", "test", "nobody").returncode == 2
    assert messages() == []  # a test message is never stored


def test_the_writeback_pool_delivers_after_commit(receiver: Receiver, tmp_path: Path, workers: Workers) -> None:
    # given a real worker of the writeback pool
    apply_webhooks(tmp_path, endpoint(receiver.url))
    workers.start("writeback")
    # when an answer's transaction records a change and commits
    record("approval.approved", "approval:11")
    # then the kick sent after commit has the pool deliver it
    wait_until(lambda: receiver.verified, message="the webhook delivered by the writeback pool")
    wait_until(lambda: [m.status for m in messages()] == ["delivered"], message="the message marked delivered")


def test_herald_webhooks_receive_verifies_records_and_refuses_a_bad_signature(env: dict[str, str],
                                                                              tmp_path: Path) -> None:
    # given `herald webhooks receive` running with the endpoint's secret
    port, out = free_port(), tmp_path / "received.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "webhooks", "receive", "--port", str(port),
                             "--secret-env", SECRET_VAR, "--out", str(out)], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(port), message="the receiver listening")
        apply_webhooks(tmp_path, endpoint(f"http://127.0.0.1:{port}/webhooks/prod"))
        # when herald delivers a change, and someone posts an unsigned one
        record("incident.resolved", "incident:4")
        assert writeback.deliver_due()["delivered"] == 1
        forged = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/prod", data=b'{"type":"x"}',
                                        headers={"webhook-id": "msg_1", "webhook-timestamp": "1",
                                                 "webhook-signature": "v1,AAAA"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # then both are recorded, the forged one refused
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["answered"], (r["payload"] or {}).get("subject")) for r in lines] == [(204, "incident:4"), (401, None)]
