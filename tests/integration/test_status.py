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
from herald.models import DeadLetter, OpsCondition, Outbox, SweepRun, utcnow
from herald.settings import get_settings
from schedules.backlog import scan_backlog
from schedules.beat import BEAT_ROW, record_beat_start
from tests.integration.conftest import Workers, wait_until
from tests.integration.helpers import rows

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
    assert body["dead_letters"] == {"open": 2, "by_kind": {"delivery": 1, "task": 1}} and code == 1
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
    assert body["dead_letters"] == {"open": 0, "by_kind": {}} and code == 1
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
