"""What a notification says: title, body and deep link per event type."""

from __future__ import annotations

from collections.abc import Callable
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
    elif flow == "operations" and data.get("reason"):  # e.g. an unreadable credential file: say why
        body = str(data["reason"])
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


# --- size limits -----------------------------------------------------------------------------

# Every provider caps one notification at 4 KB: APNs 4096 bytes of JSON, FCM 4096 bytes of
# notification + data, Web Push 4096 bytes of encrypted body (RFC 8291 section 4: 86 bytes of
# header and 17 of tag and padding delimiter leave 3993 bytes of clear text).
MAX_PAYLOAD_BYTES = 4096
ELLIPSIS = "\u2026"


class PayloadTooLarge(ValueError):
    """Even with the body and title cut down, the payload exceeds the provider's limit."""


def fit(encode: Callable[[str, str], bytes], title: str, body: str, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The encoded payload within ``limit`` bytes, trimmed predictably.

    The body is cut first (at a character boundary, ending with an ellipsis), then the title;
    what remains (link, ids, data) is never cut, since the app needs it whole: if that alone is
    too large, :class:`PayloadTooLarge` says so with the sizes.
    """
    encoded = encode(title, body)
    if len(encoded) <= limit:
        return encoded
    for field in ("body", "title"):
        text = body if field == "body" else title
        best: bytes | None = None
        low, high = 0, len(text) - 1
        while low <= high:  # the longest prefix that fits
            mid = (low + high) // 2
            cut = text[:mid] + ELLIPSIS if mid else ""
            candidate = encode(title, cut) if field == "body" else encode(cut, "")
            if len(candidate) <= limit:
                best, low = candidate, mid + 1
            else:
                high = mid - 1
        if best is not None:
            return best
        if field == "body":
            body = ""
    raise PayloadTooLarge(f"payload is {len(encoded)} bytes, limit {limit}, and {len(encode('', ''))} "
                          f"bytes remain without title and body")
