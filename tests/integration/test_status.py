"""`herald status`: sweeps not yet due right after beat starts, and the dead letters still open."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from cli.main import app
from herald import db, deadletters
from herald.models import DeadLetter, OpsCondition, Outbox, SweepRun, WorkerHeartbeat, utcnow
from herald.settings import get_settings
from schedules.backlog import scan_backlog
from schedules.beat import BEAT_ROW, record_beat_start
from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import all_done, rows

runner = CliRunner()


def status() -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["status", "--json"])
    return result.exit_code, json.loads(result.stdout)


def by_sweep(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["sweep"]: row for row in body["sweeps"]}


def test_right_after_beat_starts_the_hourly_sweeps_are_not_yet_due(workers: Workers) -> None:
    # given beat has just started (in a worker, as `herald worker --beat` runs it)
    workers.start("sweeps", concurrency=1, beat=True)
    wait_until(lambda: rows(select(SweepRun.last_started_at).where(SweepRun.sweep == BEAT_ROW)),
               message="beat's start recorded")
    # when status is asked for before the hourly sweeps' first period has passed
    code, body = status()
    sweeps = by_sweep(body)
    # then they have never run, and they are not overdue: they are not yet due
    for name in ("credentials", "purge"):
        assert sweeps[name]["last_ok_at"] is None
        assert (sweeps[name]["overdue"], sweeps[name]["not_yet_due"]) == (False, True)
    assert not any(row["overdue"] for row in body["sweeps"]) and code == 0
    assert "never (not yet due)" in runner.invoke(app, ["status"]).stdout
    # and once beat has been running for longer than twice their period without a run, they are overdue
    with db.session() as s:
        s.execute(update(SweepRun).where(SweepRun.sweep == BEAT_ROW)
                  .values(last_started_at=utcnow() - timedelta(hours=3)))
    code, body = status()
    assert by_sweep(body)["credentials"]["overdue"] is True and code == 1


def test_without_beat_a_sweep_that_never_ran_is_overdue(clean: None) -> None:
    code, body = status()
    assert by_sweep(body)["credentials"]["overdue"] is True and body["beat_started_at"] is None and code == 1


@pytest.mark.expect_dead_letters(r"^1 target\(s\): retries exhausted", r"^PoisonMessage")
def test_open_dead_letters_are_counted_by_kind_and_raise_an_operations_condition(clean: None) -> None:
    # given beat just started (no sweep is overdue) and two dead letters are open
    record_beat_start()
    deadletters.record("delivery", "1 target(s): retries exhausted after 5 attempts", ref={"delivery_ids": [1]})
    deadletters.record("task", "PoisonMessage: not an event id: 'x'", task_name="herald.enrich", ref={"args": ["x"]})
    # when status is asked for
    code, body = status()
    # then it counts them by kind, and exits 1
    assert body["dead_letters"] == {"open": 2, "by_kind": {"delivery": 1, "task": 1}, "targets": 1} and code == 1
    assert "open dead letters: 2 (delivery 1, task 1)" in runner.invoke(app, ["status"]).stdout
    # and the backlog scan raises one operations condition, through the outbox
    now = utcnow()
    summary = scan_backlog(now)
    assert summary is not None and summary["open_dead_letters"] == {"delivery": 1, "task": 1}
    assert rows(select(OpsCondition.raised, OpsCondition.value).where(OpsCondition.condition == "dead_letters")) == [
        (True, 2.0)]
    assert ops_events() == ["ops.dead_letters"]
    # when they are dealt with (dismissed here: replay would send them) the condition clears once it
    # has stayed clear long enough
    result = runner.invoke(app, ["deadletters", "dismiss", "1", "2"])
    assert result.exit_code == 0 and result.stdout.startswith("dismissed 2 dead letter(s): 1, 2")
    assert runner.invoke(app, ["deadletters", "dismiss", "1"]).exit_code == 2  # no longer open
    assert rows(select(DeadLetter.replay_count)) == [(0,), (0,)]
    code, body = status()
    # (status still exits 1: the dead_letters condition is raised until it has stayed clear long enough)
    assert body["dead_letters"] == {"open": 0, "by_kind": {}, "targets": 0} and code == 1
    assert "no open dead letter" in runner.invoke(app, ["status"]).stdout
    scan_backlog(now + timedelta(seconds=1))
    scan_backlog(now + timedelta(seconds=get_settings().backlog_clear_after_s + 2))
    assert sorted(ops_events()) == ["ops.dead_letters", "ops.dead_letters_cleared"]
    code, body = status()
    assert body["raised"] == [] and code == 0


def ops_events() -> list[str]:
    with db.session() as s:
        types = [o.envelope["type"] for o in s.scalars(select(Outbox))]
    return [t for t in types if t.startswith("ops.dead_letters")]


def test_with_no_beat_start_recorded_a_sweep_is_not_overdue_before_its_first_period_since_the_stack_started(
        clean: None) -> None:
    # given no beat start recorded (beat started before the database was migrated) and a worker alive since now
    now = utcnow()
    with db.session() as s:
        s.add(WorkerHeartbeat(node="sweeps-1@host", hostname="host", pid=1, queues=["sweeps"], started_at=now,
                              last_seen=now))
    # then the hourly sweeps are not yet due, and status says so
    code, body = status()
    assert body["stack_started_at"] == now.isoformat() and body["beat_started_at"] is None
    assert (by_sweep(body)["credentials"]["overdue"], by_sweep(body)["credentials"]["not_yet_due"]) == (False, True)
    # and once the stack has been up longer than twice their period without a run, they are overdue
    with db.session() as s:
        s.execute(update(WorkerHeartbeat).values(started_at=now - timedelta(hours=3)))
    code, body = status()
    assert by_sweep(body)["credentials"]["overdue"] is True and code == 1
    assert "sweep credentials overdue" in body["attention"]


@pytest.mark.expect_dead_letters(r"^1 target\(s\): retries exhausted after 1 attempts$")
@pytest.mark.expect_log_errors(r"dead letter \d+: delivery")
def test_a_dead_lettered_target_needs_a_person(workers: Workers) -> None:
    from producers import artifact_deployed, publish
    from tests.integration.test_deadletters import ONE_DOWN_DEVICE, start_with_one_down_device

    # given a running stack (beat included) with nothing wrong: status says nothing needs a person, exit 0
    # (Olga's route takes artifact events only: an operations event a sweep raises about the dead letter would
    # otherwise go to her dead device too, and a second dead letter could land between status's two reads)
    only_artifacts = ONE_DOWN_DEVICE.replace("{id: all,", "{id: all, match: {types: [artifact.*]},")
    assert only_artifacts != ONE_DOWN_DEVICE
    start_with_one_down_device(workers, attempts=1, concurrency=2, spec=only_artifacts)
    workers.start("sweeps", concurrency=1, beat=True)
    wait_until(lambda: status()[1]["beat_started_at"] and all(
        p["state"] != "not seen" for p in status()[1]["pools"] if p["pool"] == "sweeps"), message="the stack up")
    code, body = status()
    assert (code, body["attention"]) == (0, [])
    assert runner.invoke(app, ["status"]).stdout.startswith("nothing needs a person")
    # when a page's only target runs out of attempts and is dead-lettered
    event_id = publish(artifact_deployed("orders-api", kind="api", environment="dev"))
    wait_until(lambda: all_done([event_id]), message="the target dead")
    wait_until(lambda: rows(select(DeadLetter.id)), message="the dead letter written")
    # then status says so first, counts the target, and exits 1 (before any sweep raised a condition)
    code, body = status()
    assert code == 1 and body["dead_letters"] == {"open": 1, "by_kind": {"delivery": 1}, "targets": 1}
    assert body["attention"][0] == "1 open dead letter(s), 1 target(s) dead-lettered: herald deadletters list"
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"needs a person ({len(body['attention'])}):", f"  - {body['attention'][0]}"]
    assert "open dead letters: 1 (delivery 1); 1 delivery target(s) in them" in result.stdout


def test_queues_circuits_and_credentials(clean: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from producers import artifact_deployed, publish

    settings = get_settings()
    record_beat_start()
    # given no worker: an event waits in its queue, older than a threshold of 0 s ...
    monkeypatch.setenv("HERALD_BACKLOG_AGE_THRESHOLD_S", "0")
    get_settings.cache_clear()
    try:
        publish(artifact_deployed("orders-api", kind="api", environment="dev"))
        # ... the circuit of one FCM host is open (as herald.channels.gate keeps it, in Redis) ...
        client = redis.Redis.from_url(settings.broker_url or "")
        now_ms = int(client.time()[0]) * 1000  # type: ignore[index]
        gate = f"{settings.broker_key_prefix}herald:gate:fcm:circuit:"
        client.set(f"{gate}fcm.googleapis.com:443:open_until", now_ms + 120_000)
        client.set(f"{gate}other.example:open_until", now_ms - 1000)  # its period ended: half-open
        # ... and two credentials expire, one in 3 days
        assert runner.invoke(app, ["credentials", "add", "partner-key", "--kind", "api_key", "--expires-at",
                                   (utcnow() + timedelta(days=3, hours=1)).date().isoformat(),
                                   "--environment", "prod"]).exit_code == 0
        assert runner.invoke(app, ["credentials", "add", "later-key", "--kind", "api_key", "--expires-at",
                                   (utcnow() + timedelta(days=90)).date().isoformat()]).exit_code == 0
        # when status is asked for
        code, body = status()
    finally:
        monkeypatch.delenv("HERALD_BACKLOG_AGE_THRESHOLD_S")
        get_settings.cache_clear()
    # then it shows the waiting queue over its threshold, the open circuit, the credentials soonest first
    waiting = [q for q in body["queues"]["rows"] if q["depth"]]
    assert len(waiting) == 1 and waiting[0]["over_sla"] is True and waiting[0]["oldest_age_s"] is not None
    assert body["circuits"]["shared"] is True
    assert sorted((c["host"], c["state"]) for c in body["circuits"]["rows"]) == [
        ("fcm.googleapis.com:443", "open"), ("other.example", "half-open")]
    assert [c["name"] for c in body["credentials"]] == ["partner-key", "later-key"]
    assert 2 < body["credentials"][0]["days_left"] < 4
    # and both need a person: exit 1 (the half-open circuit does not)
    assert code == 1 and "circuit open: fcm fcm.googleapis.com:443" in body["attention"]
    assert any(a.startswith(f"queue {waiting[0]['queue']}: oldest message") for a in body["attention"])
    assert not any("other.example" in a for a in body["attention"])
    assert body["unreached_pages"] == []
    assert body["took_ms"] < 2000


def test_an_expired_credential_needs_a_person_until_renewed_or_retired(clean: None) -> None:
    record_beat_start()  # the sweeps are not yet due: only the credentials speak

    def add(name: str, days: float) -> None:
        expiry = (utcnow() + timedelta(days=days)).isoformat(timespec="seconds")
        done = runner.invoke(app, ["credentials", "add", name, "--expires-at", expiry, "--environment", "prod"])
        assert done.exit_code == 0, done.output

    # given a declared key that expired yesterday and one that expires next month
    add("old-partner-key", -1)
    add("next-month-key", 30)
    code, body = status()
    # then status names the expired one, says what to do, and exits 1
    assert code == 1
    assert [a for a in body["attention"] if "credential" in a] == [
        f"credential old-partner-key (prod) expired {(utcnow() - timedelta(days=1)).date()}: renew it "
        "(herald credentials add) or retire it (herald credentials retire)"]
    assert [c["name"] for c in body["credentials_expired"]] == ["old-partner-key"]
    # when it is renewed, nothing needs a person
    add("old-partner-key", 365)
    assert status()[0] == 0
    # and when another expires and nobody uses it any more, retiring it clears status too
    add("old-partner-key", -2)
    assert status()[0] == 1
    done = runner.invoke(app, ["credentials", "retire", "old-partner-key", "--environment", "prod"])
    assert done.exit_code == 0 and "retired old-partner-key (prod)" in done.stdout
    code, body = status()
    assert code == 0 and body["credentials_expired"] == [] and body["attention"] == []
    listed = runner.invoke(app, ["credentials", "list", "--all", "--json"])
    assert {(r["name"], r["active"]) for r in json.loads(listed.stdout)} == {
        ("old-partner-key", False), ("next-month-key", True)}
    assert "retired" in runner.invoke(app, ["credentials", "list", "--all"]).stdout


def test_many_expired_credentials_are_counted_and_retire_refuses_what_it_cannot_do(clean: None) -> None:
    from herald.models import Credential

    record_beat_start()
    # given four expired credentials, one of them read from a file
    with db.session() as s:
        for i in range(3):
            s.add(Credential(name=f"key-{i}", environment="prod", kind="api_key", origin="declared",
                             expires_at=utcnow() - timedelta(days=1), fingerprint=f"v{i}"))
        s.add(Credential(name="partners/acme", environment="prod", kind="certificate", origin="file",
                         path="/etc/pki/partners/acme.pem", expires_at=utcnow() - timedelta(days=2), fingerprint="f"))
    # then status counts them in one line
    code, body = status()
    assert code == 1 and body["attention"] == ["4 credentials expired: renew or retire them (herald credentials list)"]
    # and retire refuses a file's credential, an unknown name and an unknown environment, changing nothing
    for argv, why in ((["partners/acme"], "read from /etc/pki/partners/acme.pem: remove or replace the file"),
                      (["no-such-key"], "no credential of this name in prod"),
                      (["key-0", "--environment", "mars"], "unknown environment 'mars'")):
        done = runner.invoke(app, ["credentials", "retire", *argv])
        assert done.exit_code == 2 and why in done.stderr, done.output
    assert len(status()[1]["credentials_expired"]) == 4
