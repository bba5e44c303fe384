"""What the browser tests put in front of a person: rows as herald's pipeline leaves them, and a Web Push
payload as herald's Web Push channel builds it for one of those notifications."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from herald import actions, db
from herald.models import Answer, Approval, ApprovalVote, EventRow, Incident, Notification, utcnow


def _event(environment: str, type: str, flow: str, data: dict[str, Any], severity: str = "error",
           **fields: Any) -> EventRow:
    return EventRow(id=uuid.uuid4(), type=type, flow=flow, source="urn:browser-test", environment=environment,
                    severity=severity, idempotency_key=str(uuid.uuid4()), occurred_at=utcnow(), status="delivered",
                    data=data, **fields)


def incident(person: str, *, flow: str = "orders-to-erp", environment: str = "prod", severity: str = "error",
             error: str = "HTTP 502 from the ERP", escalation: int = 0,
             assignee: str | None = None, status: str = "open") -> tuple[int, int]:
    """A flow failure's open incident, ``person`` notified of it; (incident id, notification id)."""
    with db.session() as s:
        row = Incident(dedup_key=f"flow:{flow}:{environment}:{uuid.uuid4().hex[:6]}", environment=environment,
                       title=f"{flow} failed", subject=flow, severity=severity, status=status, assignee=assignee,
                       escalation_level=escalation)
        s.add(row)
        s.flush()
        opened = _event(environment, "flow.failed", "failure", {"flow": flow, "error": error, "attempts": 3},
                        severity, incident_id=row.id, subject=flow)
        s.add(opened)
        s.flush()
        notification = Notification(event_id=opened.id, person_id=person, route="flow-failures", reason="owner")
        s.add(notification)
        s.flush()
        return row.id, notification.id


def approval(notified: list[str], *, requester: str, quorum: int, target: str = "billing-api",
             environment: str = "prod", votes: tuple[tuple[str, str], ...] = (),
             expires_in: timedelta = timedelta(hours=4)) -> tuple[int, dict[str, int]]:
    """A pending approval request, each of ``notified`` notified; (approval id, person -> notification id)."""
    with db.session() as s:
        requested = _event(environment, "approval.requested", "approval",
                           {"request_kind": "api", "target": target, "requester": requester,
                            "reason": "publish v2 to the partner portal"}, "warning", subject=target)
        s.add(requested)
        s.flush()
        row = Approval(event_id=requested.id, request_kind="api", target=target, requester=requester, quorum=quorum,
                       expires_at=utcnow() + expires_in, status="pending")
        s.add(row)
        s.flush()
        for person, decision in votes:
            s.add(ApprovalVote(approval_id=row.id, person_id=person, decision=decision))
        found = {}
        for person in notified:
            notification = Notification(event_id=requested.id, person_id=person, route="approvals",
                                        reason="requester" if person == requester else "approver")
            s.add(notification)
            s.flush()
            found[person] = notification.id
        return row.id, found


def notice(person: str, *, type: str = "credential.expiring", environment: str = "prod") -> int:
    """A credential or operations notice, which asks for no answer; its notification id."""
    if type.startswith("credential."):
        flow, data = "credential", {"credential": "erp-client-cert", "kind": "certificate",
                                    "expires_at": (utcnow() + timedelta(days=9)).isoformat(), "days_left": 9}
    else:
        flow, data = "operations", {"resource": "edi-inbound", "metric": "depth", "value": 1200, "threshold": 500}
    with db.session() as s:
        event = _event(environment, type, flow, data, "warning")
        s.add(event)
        s.flush()
        notification = Notification(event_id=event.id, person_id=person, route="ops", reason="owner")
        s.add(notification)
        s.flush()
        return notification.id


def answered(person: str, subject_type: str, subject_id: int, action: str, *, outcome: str = "applied",
             comment: str | None = None, reason: str | None = None, ago: timedelta = timedelta(hours=2)) -> None:
    """An answer in the person's history."""
    with db.session() as s:
        s.add(Answer(at=utcnow() - ago, environment="prod", subject_type=subject_type, subject_id=subject_id,
                     action=action, person_id=person, via="token", outcome=outcome, comment=comment, reason=reason))


def webpush_payload(notification_id: int) -> dict[str, Any]:
    """What herald's Web Push channel would send for this notification (the clear text the browser decrypts):
    rendered, tokens minted and fitted as workers/deliver/delivery.py and herald/channels/webpush do."""
    from herald.channels.types import Message, Payload, Target
    from herald.channels.webpush.provider import cleartext
    from herald.payload import render, responder_url

    with db.session() as s:
        n = s.get_one(Notification, notification_id)
        e = s.get_one(EventRow, n.event_id)
        title, body, link, data = render(event_id=str(e.id), event_type=e.type, flow=e.flow,
                                         environment=e.environment, severity=e.severity, data=e.data,
                                         notification_id=n.id, ids_only=n.ids_only, enrichment=e.enrichment)
        tokens = actions.tokens_for(s, n)
        offer = actions.offer(s, e)
        payload = Payload(title, body, link, data, tokens, offer.category if offer is not None and tokens else None,
                          responder_url(n.id))
    message = Message(target=Target(0, 0, "{}", "subscription", "default", "production", 0), payload=payload,
                      severity=e.severity, collapse_key=None, ttl_s=60)
    decoded: dict[str, Any] = json.loads(cleartext(message))
    return decoded
