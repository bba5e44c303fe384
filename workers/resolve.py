"""resolve: routing rules -> recipients -> notifications -> per-channel device batches.

Recipients come from the routes in order (the first matching route wins unless it says
``continue``); each notification records the route and recipient rule that chose its person.
Besides the routes, the enrichment may name people to tell whatever the routes say (the others
of an answer, whose notification it replaces) and people never told (an approval's requester, the
person who answered: no echo of their own answer); see herald/flows.py. Quiet hours hold back
everything but critical events and escalation steps; channel opt-outs always hold.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert as sa_insert
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from herald import channels, db, unreached, urgency
from herald.app import app
from herald.channels.email.addresses import ensure as email_addresses
from herald.directory import in_quiet_hours, on_call_now, route_matches
from herald.errors import PoisonMessage
from herald.events import PAGE_SEVERITIES, Severity
from herald.lanes import Lane, lane_of, queue_for
from herald.models import (
    Delivery,
    Device,
    EventRow,
    Notification,
    Person,
    Rotation,
    Route,
    Subscription,
    TeamMember,
    utcnow,
)
from herald.settings import get_settings
from herald.taskbase import HeraldTask, deliver_by
from workers.ingest import event_uuid

log = logging.getLogger(__name__)


TOLD = "(told)"  # the route of a notification the flow's audience asked for (herald/flows.py), not a route


@dataclass(frozen=True)
class Choice:
    route: str
    reason: str
    channels: tuple[str, ...] | None
    ids_only: bool


@app.task(base=HeraldTask, name="herald.resolve")
def resolve(event_id: str) -> int:
    """Resolve an enriched event; a big audience is written and enqueued chunk by chunk.

    The event is claimed as ``resolving`` (a lease renewed by every chunk), so a duplicate task
    does nothing while the first works; a resolve that died mid-way is found by the recovery
    sweep once its lease is stale and goes on where it stopped (people already notified are
    skipped). Each chunk commits its notifications and deliveries and enqueues its batches at
    once: the first devices are being sent to while the rest of the audience is still written.
    """
    key = event_uuid(event_id)
    stale = utcnow() - timedelta(seconds=get_settings().stall_deadline_s)
    with db.session() as s:
        event = s.get(EventRow, key, with_for_update=True)
        if event is None:
            raise PoisonMessage(f"event {event_id} does not exist")
        lane = lane_of(event.type, event.source, event.severity)  # its batches ride the event's lane
        if event.status != "enriched" and not (event.status == "resolving" and event.status_at < stale):
            # Not enriched yet, grouped, refused, another task holds the lease, or done: a copy sent again after
            # the work (the recovery sweep's, a redelivery) adds nothing. Every batch went to the broker before
            # the event was marked resolved; one the broker lost is the recovery sweep's to resend, once per stall
            # and only when its queues are empty (schedules/recover.py): a copy from here grew a down deliver
            # pool's queue past one re-enqueue per batch on a slow host.
            return 0
        event.status, event.status_at = "resolving", utcnow()
    enqueued = 0
    for batches in notify(key, utcnow()):
        _enqueue(batches, lane)
        enqueued += len(batches)
    with db.session() as s:
        s.execute(update(EventRow).where(EventRow.id == key).values(status="resolved", status_at=utcnow()))
    return enqueued


def _enqueue(batches: Sequence[tuple[str, uuid.UUID]], lane: Lane) -> None:
    for channel, batch_id in batches:
        task = f"herald.deliver.{channel}"
        app.send_task(task, args=[str(batch_id)], queue=queue_for(task, lane))


def _expand(s: Session, rule: dict[str, Any], event: EventRow, now: datetime) -> list[str]:
    enrichment = event.enrichment or {}
    if "team" in rule:
        return list(s.scalars(select(TeamMember.person_id).where(TeamMember.team_id == rule["team"])))
    if "person" in rule:
        return [rule["person"]]
    if "on_call" in rule:
        rotation = s.get(Rotation, rule["on_call"])
        holder = on_call_now(rotation, now) if rotation else None
        return [holder] if holder else []
    if rule.get("owners"):
        people: list[str] = []
        for ref in enrichment.get("owners", []):
            people += _expand(s, {ref.partition(":")[0]: ref.partition(":")[2]}, event, now)
        return people
    if rule.get("subscribers"):
        topic = event.data.get("topic")
        return list(s.scalars(select(Subscription.person_id).where(Subscription.topic == topic)))
    if rule.get("requester"):
        return [enrichment["requester"]] if enrichment.get("requester") else []
    return []


def _label(rule: dict[str, Any]) -> str:
    key, value = next(iter(rule.items()))
    return key if value is True else f"{key}:{value}"


def recipients(s: Session, event: EventRow, now: datetime) -> dict[str, Choice]:
    enrichment = event.enrichment or {}
    chosen: dict[str, Choice] = {}
    # an escalation step's page goes to its people only (herald/escalation.py): no route widens it
    routes: Sequence[Route] = [] if enrichment.get("only_tell") else \
        list(s.scalars(select(Route).order_by(Route.position)))
    for route in routes:
        if not route_matches(route, event_type=event.type, environment=event.environment,
                             severity=Severity(event.severity), owners=enrichment.get("owners", []),
                             topic=event.data.get("topic")):
            continue
        for rule in route.recipients:
            for person in _expand(s, rule, event, now):
                chosen.setdefault(person, Choice(
                    route=route.id, reason=f"route {route.id}: {_label(rule)}",
                    channels=tuple(route.channels) if route.channels else None, ids_only=route.ids_only))
        if not route.continue_:
            break
    for person, why in (enrichment.get("tell") or {}).items():
        chosen.setdefault(person, Choice(route=TOLD, reason=why[:255], channels=None, ids_only=False))
    # separation of duties (the requester never gets their own request), and no echo of one's own answer
    for person in [*enrichment.get("silence", []), *([event.data["requester"]] if event.type == "approval.requested"
                                                      else [])]:
        chosen.pop(person, None)
    return chosen


def notify(event_id: uuid.UUID, now: datetime) -> Iterator[list[tuple[str, uuid.UUID]]]:
    """Write notifications and deliveries, one committed chunk at a time; yield each chunk's batches."""
    with db.session() as s:
        event = s.get_one(EventRow, event_id)
        chosen = recipients(s, event, now)
        done = set(s.scalars(select(Notification.person_id).where(Notification.event_id == event_id)))
        # quiet hours hold everything but critical events and an escalation step's page (its people are on call)
        critical = Severity(event.severity) is Severity.critical or bool((event.enrichment or {}).get("only_tell"))
    if not chosen:
        log.warning("event %s (%s) matched no recipient", event.id, event.type, extra={"event_id": str(event.id)})
        return
    todo = [person for person in chosen if person not in done]  # a resumed resolve skips the done ones
    size = get_settings().batch_size
    page = event.severity in PAGE_SEVERITIES
    for start in range(0, len(todo), size):
        if not page and start:
            urgency.hold()  # a page in flight goes first (herald/urgency.py)
        with db.session() as s:
            batches = _notify_chunk(s, event, {p: chosen[p] for p in todo[start:start + size]}, critical, now)
            s.execute(update(EventRow).where(EventRow.id == event_id).values(status_at=utcnow()))  # renew the lease
        yield batches
    log.info("event %s: %d recipients", event.id, len(chosen), extra={"event_id": str(event.id)})


def _notify_chunk(s: Session, event: EventRow, chosen: dict[str, Choice], critical: bool, now: datetime
                  ) -> list[tuple[str, uuid.UUID]]:
    # Plain rows, not ORM objects: a fan-out reads thousands of people and devices per chunk.
    people = {p.id: p for p in s.execute(
        select(Person.id, Person.timezone, Person.quiet_hours, Person.opted_out_channels)
        .where(Person.id.in_(chosen), Person.active))}
    email_addresses(s, [p for p, c in chosen.items() if c.channels and "email" in c.channels])  # routes naming it
    named_only = {spec.name for spec in channels.specs() if spec.named_only}  # e-mail: only where a route names it
    devices: dict[str, list[Any]] = {}
    for device in s.execute(select(Device.id, Device.person_id, Device.channel)
                            .where(Device.person_id.in_(people), Device.active).order_by(Device.id)):
        devices.setdefault(device.person_id, []).append(device)
    rows: list[dict[str, Any]] = []
    targets: dict[str, list[Any]] = {}
    for person_id, choice in chosen.items():
        person = people.get(person_id)
        if person is None:
            continue  # unknown or removed from the directory
        row = {"event_id": event.id, "person_id": person_id, "route": choice.route,
               "reason": choice.reason, "ids_only": choice.ids_only, "created_at": now, "status": "queued"}
        usable = [d for d in devices.get(person_id, [])
                  if d.channel not in (person.opted_out_channels or [])
                  and (d.channel in choice.channels if choice.channels is not None else d.channel not in named_only)]
        if not critical and in_quiet_hours(person, now):
            row.update(status="suppressed",
                       status_reason=f"quiet hours {'-'.join(person.quiet_hours or [])} {person.timezone}")
            usable = []
        elif not usable:
            opted = sorted(set(person.opted_out_channels or []))
            row.update(status="no_devices", status_reason=(
                f"no active device outside the opted-out channels {', '.join(opted)}" if opted
                else "no active device"))
        rows.append(row)
        targets[person_id] = usable
    if not rows:
        return []
    insert = pg_insert if db.is_postgres() else sqlite_insert
    # ON CONFLICT: a second resolve racing this one (a stale lease) never notifies anyone twice.
    written = s.execute(insert(Notification).on_conflict_do_nothing(index_elements=["event_id", "person_id"])
                        .returning(Notification.id, Notification.person_id), rows).all()
    per_channel: dict[str, list[tuple[int, int]]] = {}
    for notification_id, person_id in written:
        for device in targets[person_id]:
            per_channel.setdefault(device.channel, []).append((notification_id, device.id))
    deliveries: list[dict[str, Any]] = []
    batches: list[tuple[str, uuid.UUID]] = []
    size = get_settings().batch_size
    until = deliver_by(event.severity, now)  # retries are bounded by this time, by severity (herald/taskbase.py)
    for channel, pairs in per_channel.items():
        for start in range(0, len(pairs), size):
            batch = uuid.uuid4()
            batches.append((channel, batch))
            deliveries += [{"notification_id": n, "device_id": d, "event_id": event.id, "channel": channel,
                            "batch_id": batch, "status": "pending", "attempts": 0, "due_at": now,
                            "deliver_by": until, "updated_at": now} for n, d in pairs[start:start + size]]
    if deliveries:
        s.execute(sa_insert(Delivery), deliveries)
    unreached.after_resolve(s, [n for n, p in written if not targets[p]])  # a page to someone with no device
    return batches
