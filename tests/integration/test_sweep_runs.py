"""Exactly once (advisory lock, minimum gap, expires, two beats), `herald status`, the CLI, the purge."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cli.main import app
from herald import db
from herald.models import (
    Approval,
    AuditLog,
    CredentialNotice,
    Delivery,
    DeliveryAttempt,
    Device,
    EventRow,
    Notification,
    SweepRun,
    utcnow,
)
from schedules.purge import purge
from schedules.runs import run_exclusive
from tests.builders import Env, env_override, make_cert, pem
from tests.integration.conftest import DATA_DIR, Workers, wait_until
from tests.integration.helpers import rows

runner = CliRunner()


@pytest.fixture
def env() -> Iterator[Env]:
    yield from env_override()


def test_a_second_copy_skips_while_the_first_holds_the_advisory_lock(clean: None) -> None:
    # given a sweep that holds on until the test lets it finish
    started, finish, results = threading.Event(), threading.Event(), []

    def slow(_s: Session) -> dict[str, int]:
        started.set()
        assert finish.wait(10), "the test never let the first sweep finish"
        return {"done": 1}

    first = threading.Thread(target=lambda: results.append(run_exclusive("test-lock", slow)))
    first.start()
    started.wait(5)
    # when a second copy starts meanwhile, it skips at once; the first finishes its work
    began = time.monotonic()
    assert run_exclusive("test-lock", lambda _s: {"done": 2}) is None
    assert time.monotonic() - began < 0.5
    finish.set()
    first.join()
    assert results == [{"done": 1}]
    # and a beat-sent copy within half a period of the success skips too; a forced run does not
    assert run_exclusive("test-lock", lambda _s: {"done": 3}, min_gap_s=60) is None
    assert run_exclusive("test-lock", lambda _s: {"done": 4}) == {"done": 4}
    assert rows(select(SweepRun.runs, SweepRun.last_summary).where(SweepRun.sweep == "test-lock")) \
        == [(2, {"done": 4})]


def test_a_failed_sweep_is_recorded_and_rolled_back(clean: None) -> None:
    def broken(s: Session) -> dict[str, int]:
        s.add(AuditLog(actor="t", action="should-vanish", subject_type="t", subject_id="1", details={}))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_exclusive("test-fail", broken)
    assert rows(select(AuditLog.id)) == []
    assert rows(select(SweepRun.last_outcome, SweepRun.last_error, SweepRun.failures)) \
        == [("failed", "RuntimeError: boom", 1)]


def test_two_beats_by_mistake_still_notify_each_threshold_once(workers: Workers, tmp_path: Path) -> None:
    # given three certificates inside their thresholds, and two workers each running its own beat
    # that sends the credential sweep every second
    for i in range(3):
        (tmp_path / f"c{i}.pem").write_bytes(pem(make_cert(f"c{i}", 1 + i * 5)[0]))
    with db.session() as s:
        from herald import inventory

        inventory.add_source(s, tmp_path, environment="prod", owner="team:security")
    fast = {"HERALD_CREDENTIAL_SWEEP_INTERVAL_S": "1"}
    for _ in range(2):
        beat_dir = DATA_DIR / f"beat-{uuid.uuid4().hex[:6]}"
        beat_dir.mkdir()
        workers.start("sweeps", beat=True, env={**fast, "HERALD_DATA_DIR": str(beat_dir)})

    def sweeps_ran() -> int:
        return rows(select(func.coalesce(func.sum(SweepRun.runs), 0)).where(SweepRun.sweep == "credentials"))[0][0]

    # when they run for several periods
    wait_until(lambda: sweeps_ran() >= 3, timeout_s=60, message="three credential sweeps")
    # then each certificate was notified exactly once
    assert rows(select(func.count()).select_from(CredentialNotice)) == [(3,)]


def test_status_shows_last_run_and_overdue_and_exits_1_when_a_sweep_is_overdue(clean: None) -> None:
    # given only the credential sweep has run
    result = runner.invoke(app, ["sweep", "credentials", "--json"])
    assert result.exit_code == 0, result.output
    # when status is asked for
    result = runner.invoke(app, ["status", "--json"])
    body = json.loads(result.stdout)
    by_name = {row["sweep"]: row for row in body["sweeps"]}
    # then the credential sweep is on time, the ones that never ran are overdue, and the exit code says so
    assert by_name["credentials"]["overdue"] is False and by_name["credentials"]["last_outcome"] == "ok"
    assert by_name["backlog"]["overdue"] is True and by_name["backlog"]["last_ok_at"] is None
    assert result.exit_code == 1
    assert "credentials" in runner.invoke(app, ["status"]).stdout


def test_credentials_cli_import_add_and_list(clean: None, tmp_path: Path) -> None:
    # given a folder with a good and a broken certificate, and a list of API keys
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "gw.pem").write_bytes(pem(make_cert("gw", 9)[0]))
    (tmp_path / "certs" / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    keys = tmp_path / "keys.yaml"
    keys.write_text("- {name: acme-key, kind: api_key, expires_at: 2099-01-01, owner: 'team:security'}\n")
    # when they are imported and a client secret is added
    imported = runner.invoke(app, ["credentials", "import", str(tmp_path / "certs"), "--owner", "team:security"])
    assert imported.exit_code == 0, imported.output
    assert "1 credential(s) read, 1 unreadable" in imported.stdout
    assert runner.invoke(app, ["credentials", "import", str(keys), "--environment", "test"]).exit_code == 0
    added = runner.invoke(app, ["credentials", "add", "erp-secret", "--kind", "client_secret",
                                "--expires-at", "2030-06-30", "--owner", "person:alice"])
    assert added.exit_code == 0, added.output
    # then the list shows each with its owner and days left, soonest first
    listed = json.loads(runner.invoke(app, ["credentials", "list", "--json"]).stdout)
    assert [(r["name"], r["kind"], r["environment"], r["owner"]) for r in listed] == [
        ("gw", "certificate", "prod", "team:security"), ("erp-secret", "client_secret", "prod", "person:alice"),
        ("acme-key", "api_key", "test", "team:security"), ("broken", "certificate", "prod", "team:security")]
    assert listed[0]["days_left"] == 8 and listed[-1]["status"] == "unreadable"
    # and bad input is refused with exit code 2 and a one-line reason
    bad = runner.invoke(app, ["credentials", "add", "x", "--expires-at", "2030-01-01", "--owner", "alice"])
    assert bad.exit_code == 2 and "team:ID or person:ID" in bad.stderr


def test_purge_deletes_what_is_past_retention_and_keeps_what_is_pending(sample_directory: None, env: Env) -> None:
    # given an old finished event, an old event with a delivery still pending, and a recent one
    env["HERALD_RETAIN_EVENTS_DAYS"] = "30"
    now = utcnow()
    with db.session() as s:
        device = s.scalars(select(Device)).first()
        assert device is not None
        ids = {}
        for label, age_days, status in (("old", 40, "sent"), ("stuck", 40, "pending"), ("new", 1, "sent")):
            event_id = ids[label] = uuid.uuid4()
            at = now - timedelta(days=age_days)
            s.add(EventRow(id=event_id, type="flow.failed", flow="failure", source="t", environment="prod",
                        severity="error", idempotency_key=label, occurred_at=at, received_at=at, data={},
                        status="resolved"))
            s.flush()
            note = Notification(event_id=event_id, person_id=device.person_id, route="r", reason="r")
            s.add(note)
            s.flush()
            delivery = Delivery(notification_id=note.id, event_id=event_id, device_id=device.id,
                                channel=device.channel, batch_id=uuid.uuid4(), status=status)
            s.add(delivery)
            s.flush()
            s.add(DeliveryAttempt(delivery_id=delivery.id, attempt=1, outcome="sent", at=at))
        s.add(AuditLog(actor="t", action="old", subject_type="t", subject_id="1", details={},
                       at=now - timedelta(days=400)))
    # when the purge runs
    summary = purge()
    # then only the old finished event (and its rows) and the old audit row are gone
    assert summary is not None and summary["events"] == 1 and summary["audit_log"] == 1
    assert {r[0] for r in rows(select(EventRow.idempotency_key))} == {"stuck", "new"}
    assert rows(select(func.count()).select_from(Delivery)) == [(2,)]
    assert rows(select(func.count()).select_from(DeliveryAttempt)) == [(1,)]  # attempts: 30 days


def test_the_approvals_sweep_from_the_cli_closes_an_approval_past_its_expiry(clean: None) -> None:
    # given a pending approval whose expiry has passed
    event_id = uuid.uuid4()
    with db.session() as s:
        s.add(EventRow(id=event_id, type="approval.requested", flow="approval", source="test", environment="prod",
                       severity="info", idempotency_key=str(event_id), occurred_at=utcnow(),
                       data={"requester": "ana", "target": "orders-api"}, status="resolved"))
        s.flush()
        s.add(Approval(event_id=event_id, request_kind="api", target="orders-api", requester="ana", quorum=1,
                       expires_at=utcnow() - timedelta(minutes=1)))
    # when an operator runs the sweep
    result = runner.invoke(app, ["sweep", "approvals", "--json"])
    # then it failed closed and the run is recorded
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout) == {"expired": 1}
    assert rows(select(Approval.status)) == [("expired",)]
    assert rows(select(SweepRun.runs).where(SweepRun.sweep == "approvals")) == [(1,)]
