"""What a notification says: title, body and deep link per event type."""

from __future__ import annotations

from typing import Any

from herald.events import EVENT_TYPES

# The field that names what an event is about, per flow.
_NAME = {"artifact": "artifact", "failure": "flow", "approval": "target", "business": "reference",
         "credential": "credential", "operations": "resource"}


def render(*, event_id: str, event_type: str, flow: str, environment: str, severity: str,
           data: dict[str, Any], notification_id: int, ids_only: bool,
           enrichment: dict[str, Any] | None = None) -> tuple[str, str, str, dict[str, str]]:
    """(title, body, link, data) for one notification."""
    link = f"herald://events/{event_id}?notification={notification_id}"
    ids = {"event_id": event_id, "notification_id": str(notification_id), "type": event_type}
    summary = EVENT_TYPES[event_type].summary
    if ids_only:
        # Sensitive business data stays on the server: the app fetches it when opened.
        return "You have a new notification", summary.capitalize(), link, ids
    name = data.get(_NAME.get(flow, ""), "")
    title = f"[{environment}] {summary}" + (f": {name}" if name else "")
    if flow == "failure":
        body = data.get("error") or f"{data.get('flow')} needs attention"
    elif flow == "approval":
        body = f"{data['requester']} asks for a {data['request_kind'].replace('_', ' ')}: " \
               f"{data.get('summary') or data['target']} (quorum {data['quorum']})"
    elif flow == "credential":
        left = data.get("days_left")
        body = f"{data['kind'].replace('_', ' ')} expires {data['expires_at']}" + \
               (f" ({left} days left)" if left is not None else "")
    elif flow == "business":
        body = data.get("summary") or f"{data['reference']} {data.get('status') or ''}".strip()
    elif flow == "operations":
        body = f"{data.get('metric') or 'value'} {data.get('value')} (threshold {data.get('threshold')})"
    elif flow == "response":
        subject = (enrichment or {}).get("incident") or (enrichment or {}).get("approval") or {}
        what = subject.get("title") or subject.get("target") or ""
        body = f"{data['responder']} {summary}" + (f": {what}" if what else "")
        if data.get("comment"):
            body += f" - {data['comment']}"
    else:
        body = summary
    return title[:200], str(body)[:1000], link, {**ids, "severity": severity}
