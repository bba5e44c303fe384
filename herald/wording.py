"""What a notification says, per flow: the body (and an answer's headline) from an event's data.

Written for a lock screen: the body says what a person on call needs next (who, how much, until
when), never a repeat of the title. The per-flow table (herald/flows.py) names the function for
each flow; cleaning and cutting the text to the providers' limits is the delivery worker's
(herald/payload.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from herald.events import EVENT_TYPES

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


def artifact_body(change: str, data: dict[str, Any]) -> str:
    version = str(data.get("version") or "")
    if version and not (version[:1] in "vV" and version[1:2].isdigit()):
        version = f"version {version}"
    label = _ARTIFACT_KIND.get(str(data.get("kind")), "Artifact")
    actor = data.get("actor")
    return " ".join(filter(None, [label, version, change])) + (f" by {actor}" if actor else "")


def failure_body(change: str, data: dict[str, Any]) -> str:
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


def approval_body(change: str, data: dict[str, Any]) -> str:
    if change == "expired":
        votes = f" ({number(data.get('approvals') or 0)} of {number(data.get('quorum') or 1)} approvals)"
        return f"Expired {when(data.get('expires_at'))} without a decision{votes}: nothing was approved"
    kind = _APPROVAL_KIND.get(str(data.get("request_kind")), "a request")
    summary = data.get("summary")
    quorum = data.get("quorum") or 1
    return sentences(f"{data.get('requester')} asks you to approve {kind}" + (f": {summary}" if summary else ""),
                     f"{quorum} approvals needed" if quorum != 1 else None,
                     f"Expires {when(data['expires_at'])}" if data.get("expires_at") else None)


_CREDENTIAL_KIND = {"certificate": "Certificate", "token": "Token", "api_key": "API key",
                    "client_secret": "Client secret"}


def credential_body(change: str, data: dict[str, Any]) -> str:
    label = _CREDENTIAL_KIND.get(str(data.get("kind")), "Credential")
    at = when(data.get("expires_at"), year=True)
    left = data.get("days_left")
    if change == "expired" or (isinstance(left, int) and left < 0):
        return f"{label} expired on {at}"
    if left == 0:
        return f"{label} expires today, {at}"
    return f"{label} expires " + (f"in {count(left, 'day')}, on {at}" if isinstance(left, int) else f"on {at}")


def business_body(change: str, data: dict[str, Any]) -> str:
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


def operations_body(change: str, data: dict[str, Any]) -> str:
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


_RESPONSE_DONE = {"acknowledged": "acknowledged", "resolved": "resolved", "approved": "approved",
                  "rejected": "rejected", "follow_up_requested": "follow-up requested",
                  "info_requested": "more information requested"}


def _incident_label(title: str) -> str:
    """Incident titles are "<flow>: <event type>"; read the type as its summary."""
    name, _, kind = title.rpartition(": ")
    return f"{name} ({EVENT_TYPES[kind].summary})" if name and kind in EVENT_TYPES else title


def answer_headline(change: str, data: dict[str, Any], enrichment: dict[str, Any]) -> str:
    """What an answer's title says after the environment: what happened, by whom, to which subject.

    ``acknowledged by Chen: orders-to-erp (managed flow failed)``; an approval the vote decided says
    the count, ``approved (2 of 2): orders-api``. It replaces the notification its people got.
    """
    incident, approval = enrichment.get("incident") or {}, enrichment.get("approval") or {}
    if data.get("incident_id") is not None:
        ref = f"incident #{data['incident_id']}"
        what = _incident_label(str(incident["title"])) if incident.get("title") else ref
    else:
        ref = f"approval #{data.get('approval_id')}"
        what = str(approval.get("target") or ref)
    done = _RESPONSE_DONE.get(change, change.replace("_", " "))
    who = data.get("responder_name") or data.get("responder")
    if change == "approved" and data.get("quorum") is not None:
        count = f"({number(data.get('approvals'))} of {number(data['quorum'])})"
        done = f"approved {count}" if data.get("status") == "approved" else f"approved by {who} {count}"
    else:
        done = f"{done} by {who}"
    return f"{done}: {what}"


def answer_body(change: str, data: dict[str, Any]) -> str:
    """Who it is assigned to and the comment; the incident or approval it answers when there is neither."""
    comment = data.get("comment")
    body = sentences(f"Assigned to {data['assignee']}" if data.get("assignee") else None,
                     f"\u201c{comment}\u201d" if comment else None)
    if body:
        return body
    ref = (f"incident #{data['incident_id']}" if data.get("incident_id") is not None
           else f"approval #{data.get('approval_id')}")
    return ref.capitalize()
