"""Escalation chains on real Postgres (herald/escalation.py), run on a test clock: no sleeps, no workers.

The pipeline stages run in-process: ingest (``persist``), enrich (``describe``) and resolve's choice of
recipients (``recipients``); the step events a chain publishes are taken from the outbox the same way. Timed
steps run through the due-work tick (``timers.tick(now)``) or the step handler (``run_step(..., now=...)``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from herald import db, directory, escalation, incidents, timers
from herald.events import make_event, validate_event
from herald.models import AuditLog, DueWork, EventRow, Incident, Outbox, utcnow
from schedules.escalations import sweep_escalations
from workers.enrich import describe
from workers.ingest import persist
from workers.resolve import recipients

# ann is always on call (a shift longer than the test), ben is next; leads are cat and dan; olga is the
# route's own recipient: a step's page must never reach her (the route does not widen it).
DIRECTORY = """\
people:
  - {id: ann, name: Ann}
  - {id: ben, name: Ben}
  - {id: cat, name: Cat}
  - {id: dan, name: Dan}
  - {id: olga, name: Olga}
teams:
  - {id: leads, members: [cat, dan]}
  - {id: ops, members: [olga]}
rotations:
  - {id: primary, members: [ann, ben], shift_hours: 1000000, starts_at: 2026-01-01T00:00:00Z}
policies:
  - id: chain
    steps:
      - notify: {on_call: primary}
        importance: high
      - wait_min: 5
      - notify: {next_on_call: primary}
      - wait_min: 10
      - notify: {team: leads}
    repeat: 0
routes:
  - id: failures
    match: {types: ["flow.*"]}
    recipients: [{team: ops}]
    escalation: chain
"""

EDITED = DIRECTORY.replace("""      - notify: {next_on_call: primary}
      - wait_min: 10
      - notify: {team: leads}
""", """      - notify: {people: [olga]}
""")


def apply(tmp_path: Path, text: str) -> None:
    path = tmp_path / f"directory-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    with db.session() as s:
        directory.apply(directory.load(path), s)


@pytest.fixture
def chain_directory(clean: None, tmp_path: Path) -> Iterator[Path]:
    apply(tmp_path, DIRECTORY)
    yield tmp_path


def ingest_and_enrich(event: Any) -> uuid.UUID:
    """What the ingest and enrich tasks do with one event, in-process."""
    with db.session() as s:
        status, event_id = persist(s, validate_event(event))
    with db.session() as s:
        row = s.get_one(EventRow, event_id, with_for_update=True)
        if row.status == "received":
            row.enrichment = {**(row.enrichment or {}), **describe(s, row)}
            row.status = "enriched"
    return event_id


def pump() -> list[uuid.UUID]:
    """Ingest and enrich every event the chain wrote to the outbox and nobody ingested yet (in order)."""
    done: list[uuid.UUID] = []
    while True:
        with db.session() as s:
            pending = [o.envelope for o in s.scalars(select(Outbox).order_by(Outbox.created_at))
                       if s.get(EventRow, o.id) is None and o.envelope["type"] == "flow.escalated"]
        if not pending:
            return done
        for envelope in pending:
            done.append(ingest_and_enrich(envelope))


def fail_flow() -> int:
    """A flow failure: opens the incident, whose route names the policy; returns the incident's id."""
    event_id = ingest_and_enrich(make_event("flow.failed", {"flow": "orders-to-erp", "error": "boom"},
                                            environment="prod", severity="error"))
    with db.session() as s:
        incident_id = s.get_one(EventRow, event_id).incident_id
    assert incident_id is not None
    pump()
    return incident_id


def told(event_id: uuid.UUID) -> set[str]:
    with db.session() as s:
        return set(recipients(s, s.get_one(EventRow, event_id), utcnow()))


def pages(incident_id: int) -> list[tuple[int, int, str, str]]:
    with db.session() as s:
        return [(p.step, p.round, p.person_id, p.outcome) for p in escalation.pages_of(s, incident_id)]


def step_events(incident_id: int) -> list[EventRow]:
    with db.session() as s:
        return list(s.scalars(select(EventRow).where(EventRow.incident_id == incident_id,
                                                     EventRow.type == "flow.escalated")
                              .order_by(EventRow.received_at)))


def incident(incident_id: int) -> Incident:
    with db.session() as s:
        row = s.get_one(Incident, incident_id)
        s.expunge(row)
        return row


def chain_rows(incident_id: int) -> list[tuple[int, str]]:
    with db.session() as s:
        return [(r.step, r.state) for r in s.scalars(select(DueWork).where(
            DueWork.kind == escalation.CHAIN, DueWork.subject == str(incident_id)).order_by(DueWork.id))]


def answer(incident_id: int, action: str, person: str, assignee: str | None = None) -> None:
    with db.session() as s:
        row = incidents.get(s, incident_id)
        assert row is not None
        incidents.answer(s, row, action, person, assignee=assignee)


def later(minutes: float) -> datetime:
    return utcnow() + timedelta(minutes=minutes)


def test_a_three_step_chain_stopped_by_an_acknowledgement_between_steps_2_and_3(chain_directory: Path) -> None:
    # given a flow failure whose route names a three-step policy
    incident_id = fail_flow()
    # then step 1 paged the on-call at once, loudly, and only her: the route's own ops team is not widened in
    first = step_events(incident_id)
    assert pages(incident_id) == [(0, 0, "ann", "paged")]
    assert [(e.severity, e.data["step"], e.data["people"]) for e in first] == [("critical", 0, ["ann"])]
    assert told(first[0].id) == {"ann"}
    assert incident(incident_id).chain_step == 2  # the step after the wait runs next
    assert chain_rows(incident_id) == [(2, "due")]
    # when the clock passes the first wait, the tick runs step 2: the rotation's next person, at normal importance
    assert timers.tick(later(2))["claimed"] == 0  # not yet due
    assert timers.tick(later(6))["done"] == 1
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "paged"), (2, 0, "ben", "paged")]
    second = step_events(incident_id)[1]
    assert (second.severity, second.data["people"], told(second.id)) == ("error", ["ben"], {"ben"})
    assert chain_rows(incident_id) == [(2, "done"), (4, "due")]
    # when ben acknowledges between steps 2 and 3
    token = incident(incident_id).chain_token
    assert token is not None
    answer(incident_id, "acknowledged", "ben")
    # then the chain stopped: its timed work cancelled, its token cleared, ben's page answered
    stopped = incident(incident_id)
    assert (stopped.status, stopped.assignee, stopped.chain_token) == ("acknowledged", "ben", None)
    assert chain_rows(incident_id) == [(2, "done"), (4, "cancelled")]
    # and step 3 never pages, neither by the tick nor by a late copy of the task
    assert timers.tick(later(30))["claimed"] == 0
    with db.session() as s:
        assert escalation.run_step(s, incident_id, token, 4, now=later(30)) is False
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "paged"), (2, 0, "ben", "answered")]
    assert len(step_events(incident_id)) == 2


def test_a_policy_edited_while_an_incident_is_open_keeps_the_snapshot(chain_directory: Path) -> None:
    incident_id = fail_flow()
    snapshot = incident(incident_id).chain
    assert snapshot is not None and snapshot["policy"] == "chain" and len(snapshot["steps"]) == 5
    # when the policy is edited (step 2 now pages olga, no step 3) and applied
    apply(chain_directory, EDITED)
    # then the open incident keeps its copy: step 2 still pages ben, step 3 the leads
    assert incident(incident_id).chain["steps"] == snapshot["steps"]  # type: ignore[index]
    assert timers.tick(later(6))["done"] == 1
    assert timers.tick(later(17))["done"] == 1
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "paged"), (2, 0, "ben", "paged"), (4, 0, "cat", "paged"),
                                  (4, 0, "dan", "paged")]
    assert incident(incident_id).next_escalation_at is None  # the chain ran to its end
    # and a new incident takes the edited policy
    answer(incident_id, "resolved", "ann")
    again = fail_flow()
    assert [s for s in incident(again).chain["steps"] if "notify" in s][1]["notify"] == {"people": ["olga"]}  # type: ignore[index]


def test_two_workers_running_the_same_step_run_it_once(chain_directory: Path) -> None:
    incident_id = fail_flow()
    token, step = incident(incident_id).chain_token, incident(incident_id).chain_step
    assert token is not None
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def worker() -> None:
        with db.session() as s:
            barrier.wait(timeout=10)
            results.append(escalation.run_step(s, incident_id, token, step, now=later(6)))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False, True]
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "paged"), (2, 0, "ben", "paged")]
    # and the tick's copy of that step (still due) is stale: it does nothing
    assert timers.tick(later(7)) == {"claimed": 1, "done": 0, "stale": 1, "failed": 0, "retry": 0}
    pump()
    assert len(step_events(incident_id)) == 2


def test_two_ticks_at_once_claim_a_step_once(chain_directory: Path) -> None:
    incident_id = fail_flow()
    barrier = threading.Barrier(2)
    counts: list[dict[str, int]] = []

    def ticker() -> None:
        barrier.wait(timeout=10)
        counts.append(timers.tick(later(6)))

    threads = [threading.Thread(target=ticker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(c["done"] for c in counts) == 1 and sum(c["stale"] for c in counts) == 0
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "paged"), (2, 0, "ben", "paged")]


def test_a_follow_up_restarts_the_chain_for_the_new_assignee(chain_directory: Path) -> None:
    incident_id = fail_flow()
    old = incident(incident_id)
    # ann took it, then asks cat to follow up
    answer(incident_id, "acknowledged", "ann")
    answer(incident_id, "follow_up_requested", "ann", assignee="cat")
    now = incident(incident_id)
    assert (now.status, now.assignee, now.chain_step) == ("open", "cat", 0)
    assert now.chain_token is not None and now.chain_token != old.chain_token
    pump()
    # cat is paged first, loudly, and only cat
    assert pages(incident_id)[-1] == (escalation.ASSIGNEE_STEP, 0, "cat", "paged")
    restart_event = step_events(incident_id)[-1]
    assert told(restart_event.id) == {"cat"} and restart_event.severity == "critical"
    # the old step's task is stale: it does nothing
    with db.session() as s:
        assert escalation.run_step(s, incident_id, old.chain_token, 2, now=later(6)) is False  # type: ignore[arg-type]
    # after the policy's first wait, its steps run again from the first
    assert timers.tick(later(6))["done"] == 1
    pump()
    assert pages(incident_id)[-1] == (0, 0, "ann", "paged")
    # cat acknowledges: the chain stops
    answer(incident_id, "acknowledged", "cat")
    assert incident(incident_id).chain_token is None
    assert timers.tick(later(60))["claimed"] == 0


def test_the_auditor_reruns_an_overdue_step_whose_timed_work_went_missing(chain_directory: Path) -> None:
    incident_id = fail_flow()
    with db.session() as s:  # the timed work is lost (a restore, a bug)
        for row in s.scalars(select(DueWork).where(DueWork.kind == escalation.CHAIN)):
            s.delete(row)
    assert sweep_escalations(later(5.5)) == {"overdue": 0, "rerun": 0}  # within the grace period
    assert sweep_escalations(later(7)) == {"overdue": 1, "rerun": 1}
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "paged"), (2, 0, "ben", "paged")]
    with db.session() as s:
        audited = list(s.scalars(select(AuditLog.action).where(AuditLog.action == "incident.chain_step_overdue")))
        ops = [o.envelope for o in s.scalars(select(Outbox)) if o.envelope["type"] == "ops.processing_delayed"]
    assert audited == ["incident.chain_step_overdue"]
    assert [(e["data"]["resource"], e["data"]["value"]) for e in ops] == [("escalations", 1.0)]
    # the next step is scheduled again; nothing overdue now
    assert chain_rows(incident_id)[-1] == (4, "due")
    assert sweep_escalations(later(8)) == {"overdue": 0, "rerun": 0}


def test_the_auditor_runs_a_step_the_tick_never_ran_and_the_tick_then_finds_it_done(chain_directory: Path) -> None:
    incident_id = fail_flow()
    assert sweep_escalations(later(7)) == {"overdue": 1, "rerun": 1}
    assert chain_rows(incident_id) == [(2, "cancelled"), (4, "due")]
    assert timers.tick(later(7))["claimed"] == 0
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "paged"), (2, 0, "ben", "paged")]


def test_advance_now_runs_the_next_step_when_the_current_step_reached_nobody(chain_directory: Path) -> None:
    incident_id = fail_flow()
    with db.session() as s:
        assert escalation.advance_now(s, incident_id, reason="ann unreached") is False  # ann may still answer
    first = step_events(incident_id)[0]
    with db.session() as s:
        page = escalation.page_of(s, first.id, "ann")
        assert page is not None and (page.step, page.person_id) == (0, "ann")
        assert escalation.page_of(s, first.id, "ben") is None
        page.outcome = "unreached"
    with db.session() as s:
        assert escalation.advance_now(s, incident_id, reason="ann unreached") is True
    with db.session() as s:  # a second call for the same step: the chain moved on
        assert escalation.advance_now(s, incident_id, reason="ann unreached") is False
    pump()
    assert pages(incident_id) == [(0, 0, "ann", "unreached"), (2, 0, "ben", "paged")]
    assert chain_rows(incident_id) == [(2, "cancelled"), (4, "due")]


def test_a_route_without_a_policy_keeps_the_level_escalation(clean: None, tmp_path: Path) -> None:
    apply(tmp_path, DIRECTORY.replace("    escalation: chain\n", ""))
    incident_id = fail_flow()
    assert incident(incident_id).chain is None and pages(incident_id) == []
    with db.session() as s:
        kinds = [r.kind for r in s.scalars(select(DueWork).where(DueWork.subject == str(incident_id)))]
    assert kinds == [incidents.ESCALATE]
    with db.session() as s:  # nobody reached: the level rises at once
        assert escalation.advance_now(s, incident_id, reason="nobody reached") is True
    assert incident(incident_id).escalation_level == 1


def test_incidents_list_and_show(chain_directory: Path) -> None:
    from cli.main import app

    incident_id = fail_flow()
    timers.tick(later(6))
    pump()
    answer(incident_id, "acknowledged", "ben")
    runner = CliRunner()
    listed = runner.invoke(app, ["incidents", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["status"], r["policy"], r["chain"], r["assignee"]) for r in rows] == [
        (incident_id, "acknowledged", "chain", "stopped", "ben")]
    assert json.loads(runner.invoke(app, ["incidents", "list", "--status", "open", "--json"]).stdout) == []
    shown = json.loads(runner.invoke(app, ["incidents", "show", str(incident_id), "--json"]).stdout)
    assert [s["step"] for s in shown["chain"]["steps"]] == [
        "notify on_call:primary (high)", "wait 5 min", "notify next_on_call:primary (normal)", "wait 10 min",
        "notify team:leads (normal)"]
    assert [(p["step"], p["person"], p["outcome"]) for p in shown["pages"]] == [(0, "ann", "paged"),
                                                                                 (2, "ben", "answered")]
    assert all(p["event_id"] for p in shown["pages"])
    text = runner.invoke(app, ["incidents", "show", str(incident_id)])
    assert text.exit_code == 0 and "policy chain" in text.stdout and "ben" in text.stdout
    table = runner.invoke(app, ["incidents", "list"])
    assert table.exit_code == 0 and "ben" in table.stdout and "chain" in table.stdout
    unknown = runner.invoke(app, ["incidents", "show", "999999"])
    assert unknown.exit_code == 2 and "no incident with id 999999" in unknown.stderr
    assert runner.invoke(app, ["incidents", "list", "--status", "nope"]).exit_code == 2


def test_a_normal_step_pages_its_on_call_person_through_quiet_hours(clean: None, tmp_path: Path) -> None:
    from herald.models import Notification
    from workers.resolve import notify

    # given ben, next on call, in quiet hours all day long, with a device
    apply(tmp_path, DIRECTORY.replace("  - {id: ben, name: Ben}", '  - {id: ben, name: Ben, quiet_hours: ["00:00", '
                                      '"23:59"], devices: [{channel: fcm, token: fcm-ben}]}'))
    incident_id = fail_flow()
    # when step 2 (importance normal: severity error) pages him
    timers.tick(later(6))
    pump()
    second = step_events(incident_id)[1]
    assert (second.severity, second.data["people"]) == ("error", ["ben"])
    for _ in notify(second.id, utcnow()):
        pass
    # then quiet hours do not hold it back: he is on call
    with db.session() as s:
        note = s.scalar(select(Notification).where(Notification.event_id == second.id))
        assert note is not None and (note.person_id, note.status) == ("ben", "queued")
    # while an ordinary error event to him in quiet hours is held back (the rule it is an exception to)
    plain = ingest_and_enrich(make_event("flow.failed", {"flow": "billing", "error": "x"}, environment="prod",
                                         severity="error"))
    with db.session() as s:
        row = s.get_one(EventRow, plain)
        row.enrichment = {**(row.enrichment or {}), "tell": {"ben": "test"}}
    for _ in notify(plain, utcnow()):
        pass
    with db.session() as s:
        assert s.scalar(select(Notification.status).where(Notification.event_id == plain,
                                                          Notification.person_id == "ben")) == "suppressed"
