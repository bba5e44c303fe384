"""What a notification says: title, body and deep link per event type, clean and within 4 KB.

The text is written for a lock screen: the title says where and what (``[prod] queue backlog:
edi-inbound``), the body what a person on call needs next (who, how much, until when), never a
repeat of the title. Text that came from an event is cleaned first: control characters, terminal
escape sequences and bidi overrides never reach a phone (a U+202E can make ``exe.txt`` read as
``txt.exe``); a body keeps its line breaks, a title has none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from herald.events import EVENT_TYPES

# The field that names what an event is about, per flow.
_NAME = {"artifact": "artifact", "failure": "flow", "approval": "target", "business": "reference",
         "credential": "credential", "operations": "resource"}

MAX_TITLE_CHARS = 200
MAX_BODY_CHARS = 1000
ELLIPSIS = "\u2026"

# --- cleaning ----------------------------------------------------------------------------------

# ANSI/ECMA-48 escape sequences whole (CSI "ESC [ ... m", OSC "ESC ] ... BEL", two-character escapes):
# dropping ESC alone would leave "[31m" on the screen.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_]?)")
# C0 and C1 controls (tab, LF and CR are handled apart), DEL, the bidi marks, embeddings, overrides and
# isolates (Unicode TR9), and the BOM. Zero-width joiners stay: emoji sequences need them.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_TITLE_SPACE = str.maketrans({"\t": " ", "\n": " ", "\r": " ", "\u2028": " ", "\u2029": " "})
_BODY_SPACE = str.maketrans({"\t": " ", "\r": "\n", "\u2028": "\n", "\u2029": "\n"})
_SPACES = re.compile(r" {2,}")
_BLANK_LINES = re.compile(r"\n[ \n]*\n")


def clean_title(text: str) -> str:
    """One line of visible text: controls, escapes and bidi controls removed, spaces collapsed."""
    if not (text.isascii() and text.isprintable()):
        text = _INVISIBLE.sub("", _ESCAPES.sub("", text).translate(_TITLE_SPACE))
    return _SPACES.sub(" ", text).strip() if "  " in text else text.strip()


def clean_body(text: str) -> str:
    """As :func:`clean_title`, but line breaks stay (at most one blank line in a row)."""
    if text.isascii() and text.isprintable():
        return _SPACES.sub(" ", text).strip() if "  " in text else text.strip()
    text = _INVISIBLE.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n")).translate(_BODY_SPACE))
    return _BLANK_LINES.sub("\n\n", _SPACES.sub(" ", text)).strip()


# --- cutting at a boundary a person sees as one -----------------------------------------------

def _joins(char: str) -> bool:
    """True for a character that belongs to the one before it (a cut must not fall before it)."""
    code = ord(char)
    return (0x300 <= code <= 0x36F or 0x1AB0 <= code <= 0x1AFF or 0x1DC0 <= code <= 0x1DFF
            or 0x20D0 <= code <= 0x20FF or 0xFE20 <= code <= 0xFE2F  # combining marks
            or code == 0x200D or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF  # ZWJ, selectors
            or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F)  # skin tones, emoji tags


def _boundary(text: str, end: int) -> int:
    """The largest cut <= ``end`` that does not split an accent, emoji sequence or flag."""
    while 0 < end < len(text) and (_joins(text[end]) or text[end - 1] == "\u200d"):
        end -= 1
    flags = 0  # a flag is a pair of regional indicators: never keep half of one
    while end - flags > 0 and "\U0001f1e6" <= text[end - flags - 1] <= "\U0001f1ff":
        flags += 1
    if flags % 2 and end < len(text) and "\U0001f1e6" <= text[end] <= "\U0001f1ff":
        end -= 1
    return end


def cut(text: str, chars: int) -> str:
    """``text`` in at most ``chars`` characters; a cut one ends with an ellipsis."""
    if len(text) <= chars:
        return text
    return text[:_boundary(text, chars - 1)].rstrip() + ELLIPSIS


# --- numbers and times as people read them ----------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def number(value: Any) -> str:
    """``4210.0`` -> ``4,210``; ``0.25`` -> ``0.25``; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        x = float(value)
    except (ValueError, OverflowError):
        return str(value)
    if abs(x) >= 1e15 or x != x:  # huge, infinite or NaN: as given
        return str(value)
    return f"{int(x):,}" if x.is_integer() else f"{x:,.2f}".rstrip("0").rstrip(".")


def count(value: Any, noun: str, plural: str | None = None) -> str:
    """``1 message``, ``12,500 messages``."""
    try:
        one = float(value) == 1
    except (TypeError, ValueError, OverflowError):
        one = False
    return f"{number(value)} {noun if one else plural or noun + 's'}"


def duration(seconds: Any) -> str:
    """``45 s``, ``7 min 5 s``, ``2 h 10 min``."""
    try:
        total = round(float(seconds))
    except (TypeError, ValueError, OverflowError):
        return str(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, rest = divmod(total, 60)
        return f"{minutes} min" + (f" {rest} s" if rest and minutes < 10 else "")
    hours, rest = divmod(total // 60, 60)
    return f"{hours:,} h" + (f" {rest} min" if rest else "")


def when(value: Any, *, year: bool = False) -> str:
    """An ISO time as ``1 Dec 12:00 UTC`` (``1 Dec 2026, 12:00 UTC`` with the year)."""
    try:
        moment = datetime.fromisoformat(str(value))
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return str(value)
    day = f"{moment.day} {_MONTHS[moment.month - 1]}" + (f" {moment.year}," if year else "")
    return f"{day} {moment:%H:%M} UTC"


def sentences(*parts: str | None) -> str:
    """Join the given parts as sentences, without doubling a full stop."""
    out = ""
    for part in (p.strip() for p in parts if p and p.strip()):
        out += (part if not out else (" " if out[-1] in ".!?" else ". ") + part)
    return out


# --- the text of each flow -------------------------------------------------------------------

_ARTIFACT_KIND = {"api": "API", "mapping": "Mapping", "messaging": "Messaging artifact"}


def _artifact(change: str, data: dict[str, Any]) -> str:
    version = str(data.get("version") or "")
    if version and not (version[:1] in "vV" and version[1:2].isdigit()):
        version = f"version {version}"
    label = _ARTIFACT_KIND.get(str(data.get("kind")), "Artifact")
    actor = data.get("actor")
    return " ".join(filter(None, [label, version, change])) + (f" by {actor}" if actor else "")


def _failure(change: str, data: dict[str, Any]) -> str:
    error, attempts, credential = data.get("error"), data.get("attempts"), data.get("credential")
    if change == "recovered":
        return "Running normally again"
    if change == "escalated" and data.get("level") is not None:
        what = f"incident #{data['incident_id']}" if data.get("incident_id") is not None else "the incident"
        return f"Nobody has acknowledged {what}: escalated to level {data['level']}"
    if change == "retry_exhausted":
        lead = f"Gave up after {count(attempts, 'attempt')}" if attempts else "Gave up retrying"
        return f"{lead}: {error}" if error else lead
    if change == "credential_error":
        lead = f"Credential {credential} was refused" if credential else "A credential was refused"
        return f"{lead}: {error}" if error else lead
    body = str(error or "No error message was given")
    return body + (f" (after {count(attempts, 'attempt')})" if attempts else "")


_APPROVAL_KIND = {"api": "a new API", "credential_set": "a credential set",
                  "environment_change": "an environment change"}


def _approval(data: dict[str, Any]) -> str:
    kind = _APPROVAL_KIND.get(str(data.get("request_kind")), "a request")
    summary = data.get("summary")
    quorum = data.get("quorum") or 1
    return sentences(f"{data.get('requester')} asks you to approve {kind}" + (f": {summary}" if summary else ""),
                     f"{quorum} approvals needed" if quorum != 1 else None,
                     f"Expires {when(data['expires_at'])}" if data.get("expires_at") else None)


_CREDENTIAL_KIND = {"certificate": "Certificate", "token": "Token", "api_key": "API key",
                    "client_secret": "Client secret"}


def _credential(change: str, data: dict[str, Any]) -> str:
    label = _CREDENTIAL_KIND.get(str(data.get("kind")), "Credential")
    at = when(data.get("expires_at"), year=True)
    left = data.get("days_left")
    if change == "expired" or (isinstance(left, int) and left < 0):
        return f"{label} expired on {at}"
    if left == 0:
        return f"{label} expires today, {at}"
    return f"{label} expires " + (f"in {count(left, 'day')}, on {at}" if isinstance(left, int) else f"on {at}")


def _business(data: dict[str, Any]) -> str:
    main = str(data.get("summary") or data.get("status") or "")
    partner = data.get("partner")
    if partner and partner != data.get("reference"):
        main = f"{main} ({partner})" if main else f"Partner {partner}"
    return main or "Open to see the details"


# How each metric reads; one that is not here reads "<metric> <value> (threshold <threshold>)".
_METRICS: dict[str, Callable[[Any, Any], str]] = {
    "depth": lambda v, t: f"{count(v, 'message')} waiting (threshold {number(t)})",
    "oldest_message_age_s": lambda v, t: f"Oldest message waiting {duration(v)} (threshold {duration(t)})",
    "events_pending_past_sla": lambda v, t: f"{count(v, 'event')} past their SLA",
    "open_dead_letters": lambda v, t: f"{count(v, 'dead letter')} waiting for a person",
}


def _operations(change: str, data: dict[str, Any]) -> str:
    if data.get("reason"):  # e.g. an unreadable credential file: say why
        return str(data["reason"])
    metric, value, threshold = data.get("metric"), data.get("value"), data.get("threshold")
    label = str(metric or "value").replace("_", " ")
    if value is None:
        body = label.capitalize()
    elif str(metric) in _METRICS:
        body = _METRICS[str(metric)](value, threshold)
    else:
        body = f"{label.capitalize()} {number(value)}" + (
            f" (threshold {number(threshold)})" if threshold is not None else "")
    if change.endswith("_cleared"):
        return f"Back to normal: {body[:1].lower()}{body[1:]}"
    return body


_RESPONSE_VERB = {"acknowledged": "acknowledged", "resolved": "resolved", "approved": "approved",
                  "rejected": "rejected", "follow_up_requested": "asks for a follow-up on",
                  "info_requested": "asks for more information on"}


def _incident_label(title: str) -> str:
    """Incident titles are "<flow>: <event type>"; read the type as its summary."""
    name, _, kind = title.rpartition(": ")
    return f"{name} ({EVENT_TYPES[kind].summary})" if name and kind in EVENT_TYPES else title


def _response(change: str, data: dict[str, Any], enrichment: dict[str, Any]) -> tuple[str, str]:
    """(what the title says after the environment, the body)."""
    incident, approval = enrichment.get("incident") or {}, enrichment.get("approval") or {}
    if data.get("incident_id") is not None:
        ref = f"incident #{data['incident_id']}"
        what = _incident_label(str(incident["title"])) if incident.get("title") else ref
    else:
        ref = f"approval #{data.get('approval_id')}"
        what = str(approval.get("target") or ref)
    headline = f"{data.get('responder')} {_RESPONSE_VERB.get(change, change.replace('_', ' '))} {what}"
    comment = data.get("comment")
    body = sentences(f"Assigned to {data['assignee']}" if data.get("assignee") else None,
                     f"\u201c{comment}\u201d" if comment else None)
    return headline, body or ref.capitalize()


def collapse_key(dedup_key: str | None, notification_id: int) -> str:
    """The collapse id / Topic of every copy of one notification, whatever the attempt.

    A resend after an uncertain send (workers/deliver/delivery.py) may reach a phone that already has
    the first copy; with the same collapse key FCM, APNs (apns-collapse-id) and Web Push (Topic)
    replace it rather than show two. An incident's dedup key is shared by the notifications of its
    later events (an escalation, a worse severity), which replace the earlier ones; any other
    notification collapses with its own copies only.
    """
    return dedup_key or f"herald-n{notification_id}"


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
    change = event_type.partition(".")[2]
    name = data.get(_NAME.get(flow, ""), "")
    title = f"[{environment}] {summary}" + (f": {name}" if name else "")
    if flow == "artifact":
        body = _artifact(change, data)
    elif flow == "failure":
        body = _failure(change, data)
    elif flow == "approval":
        body = _approval(data)
    elif flow == "credential":
        body = _credential(change, data)
    elif flow == "business":
        body = _business(data)
    elif flow == "operations":
        body = _operations(change, data)
    elif flow == "response":
        headline, body = _response(change, data, enrichment or {})
        title = f"[{environment}] {headline}"
    else:
        body = summary
    return (cut(clean_title(title), MAX_TITLE_CHARS), cut(clean_body(body), MAX_BODY_CHARS), link,
            {**ids, "severity": severity})


# --- size limits -----------------------------------------------------------------------------

# Every provider caps one notification at 4 KB: APNs 4096 bytes of JSON, FCM 4096 bytes of
# notification + data, Web Push 4096 bytes of encrypted body (RFC 8291 section 4: 86 bytes of
# header and 17 of tag and padding delimiter leave 3993 bytes of clear text). Sizes are UTF-8 bytes
# of what is sent: channels encode JSON with ensure_ascii=False, since an escaped emoji
# ("\ud83d\ude00", 12 bytes) would cost three times its 4 bytes of UTF-8.
MAX_PAYLOAD_BYTES = 4096


class PayloadTooLarge(ValueError):
    """Even with the body and title cut down, the payload exceeds the provider's limit."""


def _prefix(text: str, chars: int) -> str:
    kept = text[:_boundary(text, chars)].rstrip()
    return kept + ELLIPSIS if kept else ""


def _longest(encode: Callable[[str], bytes], text: str, limit: int) -> bytes | None:
    """The encoding of the longest cut of ``text`` that fits; None when not even an empty text does."""
    empty = encode("")
    if len(empty) > limit:
        return None
    # JSON never encodes a character in fewer bytes than UTF-8 does, so the characters whose UTF-8
    # fits the room left are an upper bound: usually the first try fits, and a search is rare.
    room = limit - len(empty) - len(ELLIPSIS.encode())
    high = len(text.encode()[:max(room, 0)].decode("utf-8", "ignore"))
    if high and len(first := encode(_prefix(text, high))) <= limit:
        return first
    best, low, high = empty, 1, high - 1
    while low <= high:  # the longest prefix that fits
        mid = (low + high) // 2
        candidate = encode(_prefix(text, mid))
        if len(candidate) <= limit:
            best, low = candidate, mid + 1
        else:
            high = mid - 1
    return best


def fit(encode: Callable[[str, str], bytes], title: str, body: str, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The encoded payload within ``limit`` bytes, trimmed predictably.

    The body is cut first (at a character boundary, never inside an emoji sequence, ending with an
    ellipsis), then the title; what remains (link, ids, data) is never cut, since the app needs it
    whole: if that alone is too large, :class:`PayloadTooLarge` says so with the sizes. The common
    case, a payload that fits, costs one encoding.
    """
    encoded = encode(title, body)
    if len(encoded) <= limit:
        return encoded
    trimmed = _longest(lambda cut: encode(title, cut), body, limit)  # the title whole, the body cut
    if trimmed is None:
        trimmed = _longest(lambda cut: encode(cut, ""), title, limit)  # no body, the title cut
    if trimmed is not None:
        return trimmed
    raise PayloadTooLarge(f"payload is {len(encoded)} bytes, limit {limit}, and {len(encode('', ''))} "
                          f"bytes remain without title and body")
