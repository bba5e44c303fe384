"""Escalation chains (the OnCall pattern): who is paged, when, until someone takes the incident.

A route of the directory names a policy (``escalation: POLICY``, docs/directory.md); a policy is a list
of steps, each one either *notify* (the on-call of a rotation, its next person, a team, named people;
with an importance) or *wait N minutes*, and the whole chain repeats up to ``repeat`` more times.

- **Snapshot.** When an incident opens from an event whose matching route names a policy, the policy
  is copied into ``incidents.chain`` (:func:`start`): editing or removing the policy later does not
  change an incident in flight.
- **Steps.** The chain is flattened over its rounds: ``chain_step`` is the index of the step that runs
  next (round ``index // len(steps)``, step ``index % len(steps)``). :func:`run` runs the notify steps
  from there up to the next wait and schedules the step after it as timed work (herald/timers.py,
  kind ``incident.chain``, token = ``chain_token``, step = the index).
- **Fence.** A step runs only when the incident is open, its ``chain_token`` is the task's token and
  its ``chain_step`` is the task's step, checked under the incident's row lock (:func:`run_step`): a
  duplicate task, a step rescheduled meanwhile, or one from before a follow-up restarted the chain
  (a new token) does nothing.
- **Pages.** Each notify step publishes one ``flow.escalated`` event (source ``herald/escalation``)
  naming the incident, step, round and people, told to exactly those people (herald/flows.py,
  ``only_tell``: the routes do not widen it), severity critical for ``importance: high`` else error;
  one :class:`IncidentPage` row per person records it.
- **Stops and restarts.** Acknowledging (or resolving) stops the chain (:func:`stop`); a follow-up
  request restarts it for the new assignee (:func:`restart`): a new token, the assignee paged first.
- **Auditor.** schedules/escalations.py re-runs a step whose due time passed without it running.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from herald import timers
from herald.audit import audit
from herald.directory import on_call_now, route_matches
from herald.events import Severity, make_event
from herald.models import (
    DueWork,
    EscalationPolicy,
    EventRow,
    Incident,
    IncidentPage,
    Person,
    Rotation,
    Route,
    TeamMember,
    utcnow,
)
from herald.publishing import publish
from herald.settings import get_settings

log = logging.getLogger(__name__)

CHAIN = "incident.chain"  # the kind of timed work that runs an incident's next chain step
SOURCE = "herald/escalation"
ASSIGNEE_STEP = -1  # the page of a follow-up's new assignee (before the policy's steps)
OPEN = ("open",)


# --- the policy and its snapshot ------------------------------------------------------------------

def policy_for(s: Session, *, event_type: str, environment: str, severity: str, owners: list[str],
               topic: str | None = None) -> EscalationPolicy | None:
    """The policy named by the route that decides the event (the first matching route, as resolve walks them:
    a matching route with ``continue`` passes on to the next; the first one naming a policy wins)."""
    for route in s.scalars(select(Route).order_by(Route.position)):
        if not route_matches(route, event_type=event_type, environment=environment, severity=Severity(severity),
                             owners=owners, topic=topic):
            continue
        if route.escalation:
            return s.get(EscalationPolicy, route.escalation)
        if not route.continue_:
            return None
    return None


def snapshot(policy: EscalationPolicy, now: datetime) -> dict[str, Any]:
    """The chain an incident keeps: a copy of the policy at ``now``."""
    return {"policy": policy.id, "steps": [dict(step) for step in policy.steps], "repeat": int(policy.repeat),
            "snapshot_at": now.isoformat(), "events": {}}


def start(s: Session, incident: Incident, policy: EscalationPolicy, *, now: datetime | None = None) -> bool:
    """Snapshot ``policy`` into the incident and run its first steps; False when it already has a chain
    (a redelivered enrich) or is no longer open. The legacy level escalation stops: the chain replaces it."""
    now = now or utcnow()
    if incident.chain is not None or incident.status not in OPEN:
        return False
    _stop_legacy(s, incident)
    incident.chain = snapshot(policy, now)
    incident.chain_token, incident.chain_step = uuid.uuid4(), 0
    audit(s, SOURCE, "incident.chain_started", "incident", incident.id, policy=policy.id,
          token=str(incident.chain_token))
    run(s, incident, now)
    return True


def _stop_legacy(s: Session, incident: Incident) -> None:
    timers.cancel(s, "incident.escalate", str(incident.id))
    incident.next_escalation_at = None


def total_steps(chain: dict[str, Any]) -> int:
    return len(chain["steps"]) * (int(chain.get("repeat", 0)) + 1)


def position(chain: dict[str, Any], index: int) -> tuple[int, int]:
    """(step, round) of a flat index."""
    n = len(chain["steps"])
    return index % n, index // n


# --- running steps --------------------------------------------------------------------------------

def run(s: Session, incident: Incident, now: datetime, *, by: str = SOURCE) -> list[IncidentPage]:
    """Run the chain from ``chain_step``: its notify steps up to the next wait, then schedule the step after
    the wait. A stretch of notify steps that paged nobody (an empty team, a rotation not started) does
    not wait: the chain goes on at once. Returns the pages written."""
    chain = incident.chain
    assert chain is not None and incident.chain_token is not None
    steps, total = chain["steps"], total_steps(chain)
    index = incident.chain_step
    written: list[IncidentPage] = []
    notified_stretch = paged_stretch = False
    while index < total:
        step, round_ = position(chain, index)
        spec = steps[step]
        if "wait_min" in spec:
            if notified_stretch and not paged_stretch:
                audit(s, by, "incident.chain_skipped_wait", "incident", incident.id, step=step, round=round_,
                      reason="the steps before this wait paged nobody")
                index += 1
                notified_stretch = False
                continue
            index += 1
            _schedule(s, incident, index, now + timedelta(minutes=float(spec["wait_min"])))
            return written
        pages = _page(s, incident, step, round_, spec, now, by=by)
        written += pages
        notified_stretch, paged_stretch = True, paged_stretch or bool(pages)
        index += 1
    incident.chain_step, incident.next_escalation_at = total, None  # the chain ran to its end
    audit(s, by, "incident.chain_ended", "incident", incident.id, policy=chain.get("policy"))
    return written


def _schedule(s: Session, incident: Incident, index: int, due_at: datetime) -> None:
    assert incident.chain_token is not None
    incident.chain_step = index
    if index >= total_steps(incident.chain or {"steps": [1]}):
        incident.next_escalation_at = None
        audit(s, SOURCE, "incident.chain_ended", "incident", incident.id,
              policy=(incident.chain or {}).get("policy"))
        return
    timers.schedule(s, CHAIN, str(incident.id), due_at=due_at, step=index, token=incident.chain_token)
    incident.next_escalation_at = due_at


def people_of(s: Session, target: dict[str, Any], now: datetime) -> list[str]:
    """Who a notify step names at ``now``: the on-call now, the rotation's next person, a team, named people;
    active people of the directory only, each once, in order."""
    found: list[str] = []
    if "on_call" in target or "next_on_call" in target:
        rotation = s.get(Rotation, target.get("on_call") or target.get("next_on_call"))
        if rotation is not None and rotation.members:
            holder = on_call_now(rotation, now)
            if "on_call" in target:
                found = [holder] if holder else []
            else:
                nxt = 0 if holder is None else (rotation.members.index(holder) + 1) % len(rotation.members)
                found = [rotation.members[nxt]]
    elif "team" in target:
        found = list(s.scalars(select(TeamMember.person_id).where(TeamMember.team_id == target["team"])
                               .order_by(TeamMember.person_id)))
    elif "people" in target:
        found = [str(p) for p in target["people"]]
    elif "person" in target:
        found = [str(target["person"])]
    active = set(s.scalars(select(Person.id).where(Person.id.in_(found), Person.active))) if found else set()
    return [p for p in dict.fromkeys(found) if p in active]


def _page(s: Session, incident: Incident, step: int, round_: int, spec: dict[str, Any], now: datetime, *,
          by: str, people: list[str] | None = None) -> list[IncidentPage]:
    """One notify step: its people now, one event told to exactly them, one page row each."""
    people = people_of(s, spec.get("notify", {}), now) if people is None else people
    chain = incident.chain or {}
    if not people:
        audit(s, by, "incident.chain_step", "incident", incident.id, step=step, round=round_, people=[],
              reason="the step names nobody active")
        return []
    high = spec.get("importance", "normal") == "high"
    text = f"Incident #{incident.id} ({incident.title}) " + (
        "is yours now: acknowledge it" if step == ASSIGNEE_STEP else
        f"is not acknowledged: escalation step {step + 1}" + (f", round {round_ + 1}" if round_ else ""))
    event = make_event("flow.escalated", {
        "flow": incident.subject or incident.title.partition(":")[0] or "incident",
        "dedup_key": incident.dedup_key,
        "error": text[:4000],
        "incident_id": incident.id, "step": step, "round": round_, "people": people,
        "policy": chain.get("policy"), "importance": "high" if high else "normal",
    }, environment=incident.environment, severity=Severity.critical if high else Severity.error, source=SOURCE,
        idempotency_key=f"incident:{incident.id}:chain:{incident.chain_token}:{round_}:{step}")
    pages = [IncidentPage(incident_id=incident.id, step=step, round=round_, person_id=p, paged_at=now,
                          outcome="paged") for p in people]
    s.add_all(pages)
    s.flush()
    # The event row does not exist yet (the outbox relays it): its pages are linked when it is ingested.
    events = dict(chain.get("events") or {})
    events[str(event.id)] = [page.id for page in pages]
    incident.chain = {**chain, "events": events, "batch": [page.id for page in pages]
                      + ([] if not _same_stretch(chain, now) else list(chain.get("batch") or [])),
                      "batch_at": now.isoformat()}
    incident.updated_at = now
    publish(event, session=s)
    audit(s, by, "incident.chain_step", "incident", incident.id, step=step, round=round_, people=people,
          event_id=str(event.id), importance="high" if high else "normal")
    return pages


def _same_stretch(chain: dict[str, Any], now: datetime) -> bool:
    return chain.get("batch_at") == now.isoformat()


def run_step(s: Session, incident_id: int, token: uuid.UUID, step: int, *, now: datetime | None = None,
             by: str = SOURCE) -> bool:
    """The timed step, fenced: run the chain from ``step`` if the incident is open and its chain still stands
    at (``token``, ``step``); False (nothing done) otherwise. Two callers of the same step: the row lock
    makes the second wait, and then it finds the chain moved on."""
    now = now or utcnow()
    incident = s.get(Incident, incident_id, with_for_update=True)
    if incident is None or incident.status not in OPEN or incident.chain is None:
        return False
    if incident.chain_token != token or incident.chain_step != step:
        return False
    run(s, incident, now, by=by)
    return True


@timers.handler(CHAIN)
def chain_step(s: Session, row: DueWork) -> bool:
    return run_step(s, int(row.subject), row.token, row.step, by="herald/sweep.due")


# --- who answers, who is unreached ----------------------------------------------------------------

def advance_now(s: Session, incident_id: int, *, reason: str) -> bool:
    """The current step's people were all unreached: run the next step now (fenced, idempotent).

    False when the incident is not open, its chain has moved on (a page of the current stretch is not
    unreached: someone may still answer), or the chain has ended. An incident without a chain (its route
    names no policy) escalates its legacy level at once instead (herald/incidents.py).
    """
    incident = s.get(Incident, incident_id, with_for_update=True) if 0 < incident_id < 2**63 else None
    if incident is None or incident.status not in OPEN:
        return False
    if incident.chain is None:
        from herald import incidents  # the legacy levels live there (it imports this module)
        return incidents.escalate_now(s, incident, reason=reason)
    if incident.chain_token is None or incident.chain_step >= total_steps(incident.chain):
        return False
    batch = list(incident.chain.get("batch") or [])
    if not batch:
        return False
    outcomes = set(s.scalars(select(IncidentPage.outcome).where(IncidentPage.id.in_(batch))))
    if outcomes != {"unreached"}:
        return False
    now = utcnow()
    s.execute(update(DueWork).where(DueWork.kind == CHAIN, DueWork.subject == str(incident.id),
                                    DueWork.state == "due").values(state="cancelled", done_at=now))
    audit(s, SOURCE, "incident.chain_advanced", "incident", incident.id, step=incident.chain_step, reason=reason)
    incident.chain = {**incident.chain, "batch": []}
    run(s, incident, now)
    return True


def page_of(s: Session, event_id: uuid.UUID | str, person_id: str) -> IncidentPage | None:
    """The page row a notification belongs to (its event and person); None for a notification no chain sent."""
    key = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
    return s.scalar(select(IncidentPage).where(IncidentPage.event_id == key, IncidentPage.person_id == person_id)
                    .order_by(IncidentPage.id).limit(1))


def link_event(s: Session, row: EventRow) -> list[str]:
    """Ingest of a step's event: link its page rows to it; returns the people it pages (none for an event
    no chain published: a ``flow.escalated`` sent any other way pages nobody through this door)."""
    incident_id = row.data.get("incident_id")
    if row.source != SOURCE or not isinstance(incident_id, int) or not 0 < incident_id < 2**63:
        return []
    incident = s.get(Incident, incident_id)
    if incident is None or not incident.chain:
        return []
    ids = (incident.chain.get("events") or {}).get(str(row.id))
    if not ids:
        return []
    s.execute(update(IncidentPage).where(IncidentPage.id.in_(ids), IncidentPage.incident_id == incident.id)
              .values(event_id=row.id))
    return list(s.scalars(select(IncidentPage.person_id).where(IncidentPage.id.in_(ids))))


def told_by_page(s: Session, row: EventRow) -> list[str]:
    """The people a step's event pages (its linked page rows), for resolve."""
    return list(s.scalars(select(IncidentPage.person_id).where(IncidentPage.event_id == row.id)
                          .order_by(IncidentPage.id)))


# --- acknowledgement and follow-up ----------------------------------------------------------------

def stop(s: Session, incident: Incident, *, by: str, reason: str) -> bool:
    """Stop the chain (acknowledged, resolved): its timed work cancelled, the token cleared."""
    cancelled = timers.cancel(s, CHAIN, str(incident.id))
    if incident.chain is None or incident.chain_token is None:
        return bool(cancelled)
    incident.chain_token, incident.next_escalation_at = None, None
    audit(s, by, "incident.chain_stopped", "incident", incident.id, step=incident.chain_step, reason=reason,
          cancelled=cancelled)
    return True


def answered(s: Session, incident: Incident, person: str, now: datetime | None = None) -> int:
    """Mark the person's pages of this incident answered; returns how many."""
    now = now or utcnow()
    result = s.execute(update(IncidentPage).where(IncidentPage.incident_id == incident.id,
                                                  IncidentPage.person_id == person,
                                                  IncidentPage.outcome != "answered")
                       .values(outcome="answered", outcome_at=now).returning(IncidentPage.id))
    return len(result.all())


def restart(s: Session, incident: Incident, assignee: str | None, *, by: str,
            now: datetime | None = None) -> bool:
    """A follow-up request: the chain starts again for the new assignee (a new token: the old step tasks are
    stale), who is paged first; the policy's steps follow after its first wait. False without a chain."""
    if incident.chain is None:
        return False
    now = now or utcnow()
    timers.cancel(s, CHAIN, str(incident.id))
    incident.status = "open"  # the new assignee has not taken it yet: the chain runs until they acknowledge
    incident.chain_token, incident.chain_step = uuid.uuid4(), 0
    incident.chain = {**incident.chain, "batch": [], "restarted_at": now.isoformat()}
    audit(s, by, "incident.chain_restarted", "incident", incident.id, assignee=assignee,
          token=str(incident.chain_token))
    who = [p for p in ([assignee] if assignee else []) if p in set(people_of(s, {"people": [p]}, now))]
    pages = _page(s, incident, ASSIGNEE_STEP, 0, {"notify": {"people": who}, "importance": "high"}, now, by=by,
                  people=who) if who else []
    if not pages:
        run(s, incident, now, by=by)
        return True
    _schedule(s, incident, 0, now + timedelta(minutes=first_wait_min(incident.chain)))
    return True


def first_wait_min(chain: dict[str, Any]) -> float:
    for step in chain["steps"]:
        if "wait_min" in step:
            return float(step["wait_min"])
    return get_settings().escalate_after_s / 60


# --- the auditor ----------------------------------------------------------------------------------

def overdue(s: Session, now: datetime, grace: timedelta, *, limit: int = 100) -> list[int]:
    """Open incidents whose next chain step was due before ``now - grace`` and has not run."""
    return list(s.scalars(select(Incident.id).where(Incident.status.in_(OPEN), Incident.chain_token.is_not(None),
                                                    Incident.next_escalation_at.is_not(None),
                                                    Incident.next_escalation_at < now - grace)
                          .order_by(Incident.next_escalation_at).limit(limit)))


def rerun_overdue(s: Session, incident_id: int, now: datetime, grace: timedelta) -> bool:
    """Re-run an overdue step (its timed-work row missing, failed, or never ticked), fenced like any step."""
    incident = s.get(Incident, incident_id, with_for_update=True)
    if incident is None or incident.status not in OPEN or incident.chain_token is None or \
            incident.next_escalation_at is None or incident.next_escalation_at >= now - grace:
        return False
    rows = list(s.scalars(select(DueWork).where(DueWork.kind == CHAIN, DueWork.subject == str(incident.id),
                                                DueWork.token == incident.chain_token,
                                                DueWork.step == incident.chain_step)
                          .with_for_update(skip_locked=True)))
    state = rows[0].state if rows else "missing"
    for row in rows:
        if row.state == "due":
            row.state, row.done_at, row.done_by = "cancelled", now, "herald/sweep.escalations"
    token, step = incident.chain_token, incident.chain_step
    audit(s, "herald/sweep.escalations", "incident.chain_step_overdue", "incident", incident.id, step=step,
          due_at=incident.next_escalation_at.isoformat(), timed_work=state)
    log.warning("incident %s: chain step %s overdue since %s (timed work %s): re-run", incident.id, step,
                incident.next_escalation_at, state)
    return run_step(s, incident.id, token, step, now=now, by="herald/sweep.escalations")


# --- reading (herald incidents list|show) ---------------------------------------------------------

def step_label(step: dict[str, Any]) -> str:
    """A step in a few words: ``notify on_call:support-primary (high)``, ``wait 5 min``."""
    if "wait_min" in step:
        return f"wait {float(step['wait_min']):g} min"
    target = step.get("notify", {})
    parts = [f"{k}:{','.join(v) if isinstance(v, list) else v}" for k, v in target.items()]
    return f"notify {' '.join(parts)} ({step.get('importance', 'normal')})"


def chain_view(incident: Incident) -> dict[str, Any] | None:
    """The incident's chain as `herald incidents show` prints it; None without a chain."""
    chain = incident.chain
    if chain is None:
        return None
    n, total = len(chain["steps"]), total_steps(chain)
    running = incident.status in OPEN and incident.chain_token is not None and incident.chain_step < total
    current = position(chain, incident.chain_step) if incident.chain_step < total else None
    return {"policy": chain.get("policy"), "repeat": chain.get("repeat", 0), "snapshot_at": chain.get("snapshot_at"),
            "steps": [{"index": i, "step": step_label(step), **step} for i, step in enumerate(chain["steps"])],
            "next": ({"step": current[0], "round": current[1], "label": step_label(chain["steps"][current[0]]),
                      "due_at": incident.next_escalation_at} if running and current else None),
            "state": "running" if running else ("ended" if incident.chain_step >= total else "stopped"),
            "rounds": int(chain.get("repeat", 0)) + 1, "steps_per_round": n}


def pages_of(s: Session, incident_id: int) -> list[IncidentPage]:
    return list(s.scalars(select(IncidentPage).where(IncidentPage.incident_id == incident_id)
                          .order_by(IncidentPage.paged_at, IncidentPage.id)))
