"""resolve: routing rules -> recipients -> notifications -> per-channel device batches.

Recipients come from the routes in order (the first matching route wins unless it says
``continue``); each notification records the route and recipient rule that chose its person.
The requester of an approval never receives it. Quiet hours hold back everything but critical
events; channel opt-outs always hold.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from herald import db
from herald.app import app
from herald.directory import in_quiet_hours, on_call_now, route_matches
from herald.errors import PoisonMessage
from herald.events import Severity
from herald.models import (
    Delivery,
    Device,
    Event,
    Notification,
    Person,
    Rotation,
    Route,
    Subscription,
    TeamMember,
    utcnow,
)
from herald.settings import get_settings
from herald.tasks import HeraldTask
from workers.ingest import event_uuid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    route: str
    reason: str
    channels: tuple[str, ...] | None
    ids_only: bool


@app.task(base=HeraldTask, name="herald.resolve")
def resolve(event_id: str) -> int:
    with db.session() as s:
        event = s.get(Event, event_uuid(event_id), with_for_update=True)
        if event is None:
            raise PoisonMessage(f"event {event_id} does not exist")
        if event.status == "enriched":
            notify(s, event, utcnow())
            event.status, event.status_at = "resolved", utcnow()
        elif event.status != "resolved":
            return 0
        # Fresh or redelivered: (re-)enqueue the batches that still have work.
        batches = s.execute(select(Delivery.channel, Delivery.batch_id)
                            .where(Delivery.event_id == event.id, Delivery.status == "pending")
                            .distinct()).all()
    for channel, batch_id in batches:
        app.send_task(f"herald.deliver.{channel}", args=[str(batch_id)])
    return len(batches)


def _expand(s: Session, rule: dict[str, Any], event: Event, now: datetime) -> list[str]:
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


def recipients(s: Session, event: Event, now: datetime) -> dict[str, Choice]:
    enrichment = event.enrichment or {}
    chosen: dict[str, Choice] = {}
    for route in s.scalars(select(Route).order_by(Route.position)):
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
    if event.type == "approval.requested":
        chosen.pop(event.data["requester"], None)  # separation of duties
    return chosen


def notify(s: Session, event: Event, now: datetime) -> None:
    chosen = recipients(s, event, now)
    if not chosen:
        log.warning("event %s (%s) matched no recipient", event.id, event.type,
                    extra={"event_id": str(event.id)})
        return
    people = {p.id: p for p in s.scalars(select(Person).where(Person.id.in_(chosen), Person.active))}
    devices: dict[str, list[Device]] = {}
    for device in s.scalars(select(Device).where(Device.person_id.in_(people), Device.active)
                            .order_by(Device.id)):
        devices.setdefault(device.person_id, []).append(device)
    critical = Severity(event.severity) is Severity.critical
    rows: list[dict[str, Any]] = []
    targets: list[list[Device]] = []
    for person_id, choice in chosen.items():
        person = people.get(person_id)
        if person is None:
            continue  # unknown or removed from the directory
        row = {"event_id": event.id, "person_id": person_id, "route": choice.route,
               "reason": choice.reason, "ids_only": choice.ids_only, "created_at": now, "status": "queued"}
        usable = [d for d in devices.get(person_id, [])
                  if d.channel not in (person.opted_out_channels or [])
                  and (choice.channels is None or d.channel in choice.channels)]
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
        targets.append(usable)
    ids = list(s.scalars(insert(Notification).returning(Notification.id, sort_by_parameter_order=True),
                         rows))
    size = get_settings().batch_size
    per_channel: dict[str, list[tuple[int, int]]] = {}
    for notification_id, usable in zip(ids, targets, strict=True):
        for device in usable:
            per_channel.setdefault(device.channel, []).append((notification_id, device.id))
    deliveries: list[dict[str, Any]] = []
    for channel, pairs in per_channel.items():
        for start in range(0, len(pairs), size):
            batch = uuid.uuid4()
            deliveries += [{"notification_id": n, "device_id": d, "event_id": event.id, "channel": channel,
                            "batch_id": batch, "status": "pending", "attempts": 0, "due_at": now,
                            "updated_at": now} for n, d in pairs[start:start + size]]
    if deliveries:
        s.execute(insert(Delivery), deliveries)
    log.info("event %s: %d notifications, %d deliveries", event.id, len(rows), len(deliveries),
             extra={"event_id": str(event.id)})
