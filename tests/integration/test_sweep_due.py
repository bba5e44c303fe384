"""Timed work in Postgres: claimed with SKIP LOCKED, fenced by (token, step), once per row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

from sqlalchemy import func, select

from herald import db
from herald import timers as due
from herald.models import AuditLog, DueWork, Incident, utcnow
from tests.integration.conftest import ROOT
from tests.integration.helpers import rows

TICKER = """
import json, time
from herald.timers import tick
totals = {}
idle = 0
while idle < 3:
    got = tick()
    for k, v in got.items():
        totals[k] = totals.get(k, 0) + v
    idle = idle + 1 if got["claimed"] == 0 else 0
    time.sleep(0.01)
print(json.dumps(totals))
"""


def open_incidents(n: int) -> list[int]:
    with db.session() as s:
        incidents = [Incident(dedup_key=f"flow:f{i}:prod", environment="prod", title=f"f{i}", severity="error")
                     for i in range(n)]
        s.add_all(incidents)
        s.flush()
        return [i.id for i in incidents]


def test_two_ticking_processes_claim_each_due_row_once(clean: None) -> None:
    # given 300 open incidents, each with an escalation step due now
    ids = open_incidents(300)
    with db.session() as s:
        for incident_id in ids:
            due.schedule(s, "incident.escalate", str(incident_id), due_at=utcnow() - timedelta(seconds=1))
    # when two processes tick at the same time, 20 rows a tick
    env = {**os.environ, "HERALD_DUE_BATCH_SIZE": "20"}
    procs = [subprocess.Popen([sys.executable, "-c", TICKER], cwd=ROOT, env=env, stdout=subprocess.PIPE)
             for _ in range(2)]
    totals = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    # then every row was claimed and done exactly once between them, and each incident escalated once
    assert sum(t["done"] for t in totals) == 300
    assert sum(t["claimed"] for t in totals) == 300
    assert rows(select(DueWork.state, func.count()).group_by(DueWork.state)) == [("done", 300)]
    assert rows(select(func.count()).select_from(AuditLog).where(AuditLog.action == "incident.escalated")) == [(300,)]
    assert rows(select(Incident.escalation_level, func.count()).group_by(Incident.escalation_level)) == [(1, 300)]


def test_a_repeated_or_stale_step_does_nothing(clean: None) -> None:
    # given an incident escalated to level 1 by its step
    [incident_id] = open_incidents(1)
    with db.session() as s:
        step = due.schedule(s, "incident.escalate", str(incident_id), due_at=utcnow())
        token = step.token
    assert due.tick()["done"] == 1
    # when the same step is completed again (a repeated tick) it is refused by the fence
    with db.session() as s:
        assert not due.complete(s, step.id, token, 1, state="done", by="test")
    # and a second copy of step 1 (another token: a stale scheduler) finds the incident already there
    with db.session() as s:
        due.schedule(s, "incident.escalate", str(incident_id), due_at=utcnow())
    assert due.tick() == {"claimed": 1, "done": 0, "stale": 1, "failed": 0, "retry": 0}
    assert rows(select(Incident.escalation_level)) == [(1,)]


def test_an_acknowledged_incident_stops_escalating_and_steps_chain_while_open(clean: None) -> None:
    # given an incident whose escalation repeats every minute up to level 3
    a, b = open_incidents(2)
    now = utcnow()
    with db.session() as s:
        for incident_id in (a, b):
            due.schedule(s, "incident.escalate", str(incident_id), due_at=now,
                         payload={"repeat_s": 60, "max_step": 3})
    assert due.tick(now)["done"] == 2
    # when b is acknowledged before its next step, and the clock moves past both next steps
    with db.session() as s:
        incident = s.get(Incident, b)
        assert incident is not None
        incident.status = "acknowledged"
    assert due.tick(now + timedelta(seconds=61)) == {"claimed": 2, "done": 1, "stale": 1, "failed": 0, "retry": 0}
    due.tick(now + timedelta(seconds=122))
    due.tick(now + timedelta(seconds=183))
    # then a went up to 3 and stopped there, b stayed at 1
    assert dict(rows(select(Incident.id, Incident.escalation_level))) == {a: 3, b: 1}


def test_a_failing_handler_is_retried_later_and_does_not_block_others(clean: None) -> None:
    calls: list[str] = []

    @due.handler("test.flaky")
    def flaky(s: object, row: DueWork) -> bool:
        calls.append(row.subject)
        if row.subject == "bad":
            raise RuntimeError("downstream unavailable")
        return True

    try:
        with db.session() as s:
            due.schedule(s, "test.flaky", "bad", due_at=utcnow())
            due.schedule(s, "test.flaky", "good", due_at=utcnow())
        assert due.tick() == {"claimed": 2, "done": 1, "stale": 0, "failed": 0, "retry": 1}
        with db.session() as s:
            bad = s.scalar(select(DueWork).where(DueWork.subject == "bad"))
            assert bad is not None and bad.state == "due" and bad.attempts == 1
            assert bad.due_at > utcnow() and "downstream unavailable" in (bad.last_error or "")
    finally:
        due.HANDLERS.pop("test.flaky")
