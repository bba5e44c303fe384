"""The event catalogue: one envelope for every event, a typed ``data`` model per type.

An event's JSON form is CloudEvents-compatible (``to_cloudevent`` / ``from_cloudevent``):
the envelope's fields map onto ``id``, ``type``, ``source``, ``time``, ``subject`` and
``data``, and herald's own attributes travel as the extensions ``environment``,
``severity`` and ``idempotencykey``.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from herald.errors import InvalidEvent
from herald.settings import get_settings


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


# A page: what must wake someone up (herald/lanes.py gives it the urgent lane, the channels' gates a reserve).
PAGE_SEVERITIES: frozenset[str] = frozenset((Severity.critical, Severity.error))


class Flow(StrEnum):
    artifact = "artifact"
    failure = "failure"
    approval = "approval"
    business = "business"
    credential = "credential"
    operations = "operations"
    response = "response"


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)


Name = Field(min_length=1, max_length=255)


# 1. artifact lifecycle
class ArtifactData(_Data):
    artifact: str = Name
    kind: Literal["api", "mapping", "messaging"]
    version: str | None = None
    actor: str | None = None


# 2. flow failure
class FlowFailureData(_Data):
    flow: str = Name
    error: str | None = Field(default=None, max_length=4000)
    attempts: int | None = Field(default=None, ge=0)
    credential: str | None = None
    dedup_key: str | None = Field(default=None, max_length=255)


# 3. approval request
class ApprovalData(_Data):
    request_kind: Literal["api", "credential_set", "environment_change"]
    target: str = Name
    requester: str = Field(min_length=1, max_length=64)
    quorum: int = Field(default=1, ge=1, le=50)
    expires_at: datetime
    summary: str | None = Field(default=None, max_length=2000)

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("expires_at needs a timezone (for example 2026-12-01T12:00:00Z)")
        return value


# 4. business events
class BusinessData(_Data):
    topic: str = Field(min_length=1, max_length=255)
    reference: str = Name
    status: str | None = None
    partner: str | None = None
    summary: str | None = Field(default=None, max_length=2000)


# 5. credential expiry
class CredentialData(_Data):
    credential: str = Name
    kind: Literal["certificate", "token", "api_key", "client_secret"]
    expires_at: datetime
    days_left: int | None = None
    threshold_days: int | None = None
    fingerprint: str | None = None


# 6. operations
class OperationsData(_Data):
    resource: str = Name  # a queue, flow or application
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None


# 7. responses
class ResponseData(_Data):
    responder: str = Field(min_length=1, max_length=64)
    incident_id: int | None = None
    approval_id: int | None = None
    comment: str | None = Field(default=None, max_length=2000)
    assignee: str | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> ResponseData:
        if (self.incident_id is None) == (self.approval_id is None):
            raise ValueError("a response names exactly one of incident_id or approval_id")
        return self


class EventType(BaseModel):
    name: str
    flow: Flow
    data: type[_Data]
    severity: Severity
    summary: str


def _types() -> dict[str, EventType]:
    rows: list[tuple[str, Flow, type[_Data], Severity, str]] = [
        ("artifact.deployed", Flow.artifact, ArtifactData, Severity.info, "artifact deployed"),
        ("artifact.updated", Flow.artifact, ArtifactData, Severity.info, "artifact updated"),
        ("artifact.retired", Flow.artifact, ArtifactData, Severity.warning, "artifact retired"),
        ("flow.failed", Flow.failure, FlowFailureData, Severity.error, "managed flow failed"),
        ("flow.retry_exhausted", Flow.failure, FlowFailureData, Severity.critical,
         "flow exceeded its retry threshold"),
        ("flow.credential_error", Flow.failure, FlowFailureData, Severity.critical,
         "flow hit a credential error"),
        ("flow.recovered", Flow.failure, FlowFailureData, Severity.info, "flow recovered"),
        ("flow.escalated", Flow.failure, FlowFailureData, Severity.critical, "incident still unacknowledged"),
        ("approval.requested", Flow.approval, ApprovalData, Severity.warning, "approval requested"),
        # herald's own: the approvals sweep (or a late vote) closed it at its expiry, undecided
        ("approval.expired", Flow.approval, ApprovalData, Severity.warning, "approval expired"),
        ("business.order_submitted", Flow.business, BusinessData, Severity.info, "order submitted"),
        ("business.shipment_status", Flow.business, BusinessData, Severity.info, "shipment status"),
        ("business.invoice_posted", Flow.business, BusinessData, Severity.info, "invoice posted"),
        ("business.partner_onboarding", Flow.business, BusinessData, Severity.info,
         "partner onboarding milestone"),
        ("credential.expiring", Flow.credential, CredentialData, Severity.warning, "credential expiring"),
        ("credential.expired", Flow.credential, CredentialData, Severity.critical, "credential expired"),
        ("ops.queue_backlog", Flow.operations, OperationsData, Severity.error, "queue backlog"),
        ("ops.queue_backlog_cleared", Flow.operations, OperationsData, Severity.info,
         "queue backlog cleared"),
        ("ops.processing_delayed", Flow.operations, OperationsData, Severity.warning, "processing delayed"),
        ("ops.processing_delayed_cleared", Flow.operations, OperationsData, Severity.info,
         "processing back on time"),
        ("ops.credential_unreadable", Flow.operations, OperationsData, Severity.warning,
         "credential file unreadable"),
        ("ops.sla_breached", Flow.operations, OperationsData, Severity.critical, "SLA breached"),
        ("ops.sla_breached_cleared", Flow.operations, OperationsData, Severity.info, "SLA breach cleared"),
        ("ops.dead_letters", Flow.operations, OperationsData, Severity.error, "work stopped in dead letters"),
        ("ops.dead_letters_cleared", Flow.operations, OperationsData, Severity.info, "no dead letter open"),
        # herald's own: a page reached nobody (herald/unreached.py); no "cleared": each one is its own alert
        ("ops.page_unreached", Flow.operations, OperationsData, Severity.error, "page reached nobody"),
        ("response.acknowledged", Flow.response, ResponseData, Severity.info, "acknowledged"),
        ("response.resolved", Flow.response, ResponseData, Severity.info, "resolved"),
        ("response.follow_up_requested", Flow.response, ResponseData, Severity.info,
         "follow-up requested"),
        ("response.approved", Flow.response, ResponseData, Severity.info, "approved"),
        ("response.rejected", Flow.response, ResponseData, Severity.info, "rejected"),
        ("response.info_requested", Flow.response, ResponseData, Severity.info, "more information requested"),
    ]
    return {name: EventType(name=name, flow=flow, data=data, severity=sev, summary=summary)
            for name, flow, data, sev, summary in rows}


EVENT_TYPES: dict[str, EventType] = _types()

# flow failures that open or join an incident (flow.recovered closes it)
INCIDENT_TYPES = frozenset({"flow.failed", "flow.retry_exhausted", "flow.credential_error"})


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope every event travels in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    source: str = Field(default="herald/producer", min_length=1, max_length=255)
    time: datetime = Field(default_factory=_now)
    environment: str = Field(min_length=1, max_length=32)
    severity: Severity | None = None
    subject: str | None = Field(default=None, max_length=255)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    data: dict[str, Any]

    @property
    def flow(self) -> Flow:
        return EVENT_TYPES[self.type].flow

    @property
    def key(self) -> str:
        """The idempotency key; the event id when the producer gave none."""
        return self.idempotency_key or str(self.id)

    def effective_severity(self) -> Severity:
        return self.severity or EVENT_TYPES[self.type].severity

    def dedup_key(self) -> str | None:
        """Flow failures group into one incident by this key (default: flow and environment)."""
        if self.flow is not Flow.failure:
            return None
        data = self.data
        return str(data.get("dedup_key") or f"flow:{data['flow']}:{self.environment}")

    def to_json(self) -> dict[str, Any]:
        """herald's wire form (what the ingest task receives)."""
        return self.model_dump(mode="json")

    def to_cloudevent(self) -> dict[str, Any]:
        body = {
            "specversion": "1.0",
            "id": str(self.id),
            "type": self.type,
            "source": self.source,
            "time": self.time.isoformat(),
            "datacontenttype": "application/json",
            "environment": self.environment,
            "severity": self.effective_severity().value,
            "idempotencykey": self.key,
            "data": self.data,
        }
        if self.subject:
            body["subject"] = self.subject
        return body


def from_cloudevent(body: dict[str, Any]) -> Event:
    """Build an event from a CloudEvents JSON object (structured mode)."""
    fields = {
        "id": body.get("id"),
        "type": body.get("type"),
        "source": body.get("source"),
        "time": body.get("time"),
        "environment": body.get("environment"),
        "severity": body.get("severity"),
        "subject": body.get("subject"),
        "idempotency_key": body.get("idempotencykey"),
        "data": body.get("data"),
    }
    return validate_event({k: v for k, v in fields.items() if v is not None})


# Deeper data is refused before anything serialises it: json and pydantic fail on a few hundred
# levels with a bare ValueError or RecursionError, and no event needs more than a handful.
MAX_DATA_DEPTH = 32

# Postgres cannot store NUL in text or jsonb, nor a lone UTF-16 surrogate in UTF-8: such an event
# would be accepted here and then fail in ingest, so it is refused at the edge instead.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_NAMES = {"\x00": "a NUL character (\\u0000)"}


def _where(path: str) -> str:
    """A field path fit for a one-line message (no control characters, bounded)."""
    shown = path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 80 else shown[:79] + "\u2026"


def _unstorable(text: str, path: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    what = _UNSTORABLE_NAMES.get(char) or f"a lone surrogate (\\u{ord(char):04x})"
    return f"{_where(path)}: contains {what}, which cannot be stored"


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "event"
        message = err["msg"].removeprefix("Value error, ")
        problems.append(_where(f"{prefix}{where}") + f": {message}")
    return "; ".join(problems)


def check_storable(event: Event) -> None:
    """Refuse what Postgres cannot store or what is nested too deep, with a one-line reason.

    Iterative on purpose: recursion is exactly what deep data exhausts.
    """
    for name in ("type", "source", "environment", "subject", "idempotency_key"):
        value = getattr(event, name)
        if isinstance(value, str) and (problem := _unstorable(value, name)):
            raise InvalidEvent(problem)
    stack: list[tuple[Any, str, int]] = [(event.data, "data", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if problem := _unstorable(value, path):
                raise InvalidEvent(problem)
            continue
        if isinstance(value, dict | list | tuple) and depth > MAX_DATA_DEPTH:
            raise InvalidEvent(f"{_where(path)}: nested more than {MAX_DATA_DEPTH} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}"
                if isinstance(key, str) and (problem := _unstorable(key, where)):
                    raise InvalidEvent(problem)
                stack.append((item, where, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def validate_event(value: Event | dict[str, Any]) -> Event:
    """Check an event completely; raise :class:`InvalidEvent` with a one-line reason."""
    try:
        event = value if isinstance(value, Event) else Event.model_validate(value)
    except ValidationError as exc:
        raise InvalidEvent(_first_error(exc)) from None
    check_storable(event)
    spec = EVENT_TYPES.get(event.type)
    if spec is None:
        raise InvalidEvent(f"unknown event type {event.type!r} (see `herald publish --help` for the list)")
    settings = get_settings()
    if event.environment not in settings.environments:
        raise InvalidEvent(
            f"unknown environment {event.environment!r} (known: {', '.join(settings.environments)})"
        )
    size = len(json.dumps(event.data, default=str).encode())
    if size > settings.max_event_bytes:
        raise InvalidEvent(f"data is {size} bytes, over the limit of {settings.max_event_bytes} bytes")
    try:
        typed = spec.data.model_validate(event.data)
    except ValidationError as exc:
        raise InvalidEvent(f"{event.type}: " + _first_error(exc, "data.")) from None
    # Keep the normalised data (stripped strings, parsed datetimes) in its JSON form.
    return event.model_copy(update={"data": typed.model_dump(mode="json", exclude_none=True)})


def make_event(type: str, data: dict[str, Any], *, environment: str, **fields: Any) -> Event:
    """Build and validate an event in one call."""
    return validate_event({"type": type, "data": data, "environment": environment, **fields})
