"""herald's state: every table, in one place (SQLAlchemy 2 declarative).

Portable between Postgres (production) and SQLite (the embedded default).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on Postgres and on SQLite (which stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


# --- events, incidents, approvals -------------------------------------------------------


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    flow: Mapped[str] = mapped_column(String(32), index=True)
    source: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    dedup_key: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    enrichment: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # received -> enriched -> resolving -> resolved; or grouped (joined an open incident, nobody re-notified)
    status: Mapped[str] = mapped_column(String(16), default="received")
    status_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    # when the recovery sweep last re-enqueued it: once per stall, not once per sweep (schedules/recover.py)
    recovered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_events_status_at", "status", "status_at"),)


class Incident(Base):
    """A ticket: flow failures with the same dedup key join the one open incident."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(255))
    # What it is about: the flow's name for a flow failure (a recovery closes only its own flow's
    # incident), the credential's reference for a credential incident. None on rows from before 0005.
    subject: Mapped[str | None] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, acknowledged, resolved
    assignee: Mapped[str | None] = mapped_column(String(64))
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    next_escalation_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The escalation chain, snapshotted from its policy when the incident opened (herald/escalation.py): editing
    # the policy later does not change an incident in flight. None: the route named no policy.
    chain: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Where the chain stands: the index of the step that runs next, and the fence of its timed work (a stale
    # step task, or one from before a follow-up restarted the chain, carries another token and does nothing).
    chain_step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    chain_token: Mapped[uuid.UUID | None] = mapped_column()

    __table_args__ = (
        # At most one open (or acknowledged) incident per dedup key.
        Index(
            "uq_incidents_open_dedup",
            "dedup_key",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
            sqlite_where=text("status <> 'resolved'"),
        ),
    )


class IncidentPage(Base):
    """One person paged by one step of an incident's escalation chain, and what became of it."""

    __tablename__ = "incident_pages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    person_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("events.id"))
    paged_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # paged (sent on its way), delivered, unreached (every device failed, or none), answered
    outcome: Mapped[str] = mapped_column(String(16), default="paged", server_default="paged")
    outcome_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EscalationPolicy(Base):
    """A named escalation chain from the directory: steps (who to page, how loudly, how long to wait), repeated."""

    __tablename__ = "escalation_policies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    repeat: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"), unique=True)
    request_kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(255))
    requester: Mapped[str] = mapped_column(String(64))
    quorum: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending approved rejected expired
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApprovalVote(Base):
    __tablename__ = "approval_votes"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id"))
    person_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # approve, reject, request_info
    comment: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("approval_id", "person_id"),)


# --- directory --------------------------------------------------------------------------


class Person(Base):
    __tablename__ = "people"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    # Other names the person answers or requests under (an admin platform's user name, an old id):
    # an answer's identity is matched against id, email and these, case-insensitively.
    aliases: Mapped[list[str]] = mapped_column(Json, default=list)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    quiet_hours: Mapped[list[str] | None] = mapped_column(Json)  # ["22:00", "07:00"] local time
    opted_out_channels: Mapped[list[str]] = mapped_column(Json, default=list)
    # Removed from the directory file: kept for history (notifications name them), never routed to.
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))


class TeamMember(Base):
    __tablename__ = "team_members"

    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), primary_key=True)


class Rotation(Base):
    """An on-call rotation: ``members`` take ``shift_hours`` turns from ``starts_at``."""

    __tablename__ = "rotations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    members: Mapped[list[str]] = mapped_column(Json)
    shift_hours: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Resource(Base):
    """An artifact, flow, credential or queue known to the directory, with its owners."""

    __tablename__ = "resources"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # artifact, flow, credential, queue, application
    name: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(32), default="*")
    owners: Mapped[list[str]] = mapped_column(Json, default=list)  # "team:x" or "person:y"
    meta: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)

    __table_args__ = (UniqueConstraint("kind", "name", "environment"),)


class Route(Base):
    """One routing rule: which events (``match``) go to which recipients."""

    __tablename__ = "routes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    match: Mapped[dict[str, Any]] = mapped_column(Json)
    recipients: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    channels: Mapped[list[str] | None] = mapped_column(Json)
    ids_only: Mapped[bool] = mapped_column(Boolean, default=False)
    continue_: Mapped[bool] = mapped_column("continue", Boolean, default=False)
    escalation: Mapped[str | None] = mapped_column(String(64))  # an escalation policy's id


class Subscription(Base):
    __tablename__ = "subscriptions"

    person_id: Mapped[str] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # fcm, apns, webpush
    token: Mapped[str] = mapped_column(Text)  # FCM token or FID, APNs token, Web Push subscription JSON
    token_kind: Mapped[str] = mapped_column(String(16), default="token")  # token | fid | subscription
    app: Mapped[str] = mapped_column(String(128), default="default")
    environment: Mapped[str] = mapped_column(String(16), default="production")  # APNs sandbox/production
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Last change of this row by any door (the directory file included).
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Last time the device itself registered the token (producer, CLI, API); None when only the
    # directory file names it. An APNs 410 older than this leaves the token active.
    device_registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deactivated_reason: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("channel", "token", name="uq_devices_channel_token"),)


# --- notifications and deliveries -------------------------------------------------------


class Notification(Base):
    """One event for one recipient, with the route that chose them."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"), index=True)
    person_id: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(255))
    # queued: has deliveries; suppressed: quiet hours; no_devices: nothing to send to (opt-outs).
    status: Mapped[str] = mapped_column(String(16), default="queued")
    status_reason: Mapped[str | None] = mapped_column(String(255))
    ids_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    first_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A page that reached nobody: every delivery failed, or the person had no usable device (status "unreached").
    unreached_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)

    __table_args__ = (UniqueConstraint("event_id", "person_id"),)


TERMINAL_DELIVERY = ("sent", "failed", "dead")


class Delivery(Base):
    """One notification to one device: the target whose state must end terminal."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"), index=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    channel: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[uuid.UUID] = mapped_column(index=True)
    # pending -> sending -> sent | failed | dead (pending again for a transient failure)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Retries are bounded by this time (the notification's deadline by severity), not by a count; None: rows
    # from before 0006, bounded by HERALD_MAX_DELIVERY_ATTEMPTS as they were.
    deliver_by: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(512))
    # when the recovery sweep last re-enqueued its batch (schedules/recover.py)
    recovered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_deliveries_status_due", "status", "due_at"),)


class DeliveryAttempt(Base):
    """One try of one delivery, with the provider's answer."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # sent, transient, uncertain (sent, no answer: may be delivered), permanent, invalid_token, auth,
    # lost (in flight when a worker died); resend: a copy after an uncertain or lost one (reason says which)
    outcome: Mapped[str] = mapped_column(String(16))
    provider_status: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(512))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    resend: Mapped[bool] = mapped_column(Boolean, default=False)
    task_id: Mapped[str | None] = mapped_column(String(64))


# --- plumbing: outbox, dead letters, audit ----------------------------------------------


class Outbox(Base):
    """Events written inside the caller's transaction, relayed to the broker after commit."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)  # the event id
    idempotency_key: Mapped[str] = mapped_column(String(255), index=True)
    envelope: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(512))
    ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class DeadLetter(Base):
    """Work that cannot go on by itself, with the reason; ``herald deadletters replay`` retries it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # task, message, delivery
    task_name: Mapped[str | None] = mapped_column(String(128))
    queue: Mapped[str | None] = mapped_column(String(64))
    ref: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # ids to replay with
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)  # raw text of a malformed message, truncated
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    replay_count: Mapped[int] = mapped_column(Integer, default=0)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


# --- sweeps -----------------------------------------------------------------------------
# Owned by schedules/ (docs/sweeps.md): the credential inventory and its notify-once ledger,
# the state of operations conditions (hysteresis), timed work, and when each sweep last ran.


class CredentialSource(Base):
    """A file or folder of certificates and tokens, rescanned on every credential sweep."""

    __tablename__ = "credential_sources"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    environment: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(128))  # "team:x" or "person:y"
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Credential(Base):
    """One credential; its version is its fingerprint, so a rotated credential is a new version."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))  # certificate, token, api_key, client_secret
    owner: Mapped[str | None] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(16))  # file (rescanned) or declared
    source_id: Mapped[int | None] = mapped_column(ForeignKey("credential_sources.id", ondelete="SET NULL"))
    path: Mapped[str | None] = mapped_column(String(1024))
    fingerprint: Mapped[str | None] = mapped_column(String(128))  # None while the file is unreadable
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    subject: Mapped[str | None] = mapped_column(Text)
    issuer: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # SANs, chain, the file's error
    error: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # False once its file is gone
    version_since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("name", "environment", name="uq_credentials_name_env"),)


class CredentialNotice(Base):
    """The notify-once ledger: one row per (credential, version, threshold) ever notified."""

    __tablename__ = "credential_notices"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    credential_id: Mapped[int] = mapped_column(ForeignKey("credentials.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(128))
    threshold_days: Mapped[int] = mapped_column(Integer)  # 0: expired; -1: unreadable file
    event_id: Mapped[uuid.UUID] = mapped_column()
    notified_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("credential_id", "version", "threshold_days",
                                       name="uq_credential_notices_once"),)


class OpsCondition(Base):
    """One watched condition (backlog of a queue, delay, SLA of a flow): raised or not, since when."""

    __tablename__ = "ops_conditions"

    condition: Mapped[str] = mapped_column(String(32), primary_key=True)
    resource: Mapped[str] = mapped_column(String(255), primary_key=True)
    raised: Mapped[bool] = mapped_column(Boolean, default=False)
    value: Mapped[float | None] = mapped_column()
    threshold: Mapped[float] = mapped_column()
    raised_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    under_since: Mapped[datetime | None] = mapped_column(UTCDateTime())  # back under while raised
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DueWork(Base):
    """Timed work (an escalation step...): a row with a due time, claimed with SKIP LOCKED.

    ``(token, step)`` fences it: a tick acts only on a row still due with the token and step it
    read, so a stale or repeated tick does nothing.
    """

    __tablename__ = "due_work"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    step: Mapped[int] = mapped_column(Integer, default=1)
    token: Mapped[uuid.UUID] = mapped_column(default=uuid.uuid4)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), default="due")  # due, done, cancelled, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    last_error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_due_work_state_due", "state", "due_at"),
                      UniqueConstraint("kind", "subject", "step", "token", name="uq_due_work_step"))


class SweepRun(Base):
    """When each sweep last ran and how (``herald status`` reads it)."""

    __tablename__ = "sweep_runs"

    sweep: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_outcome: Mapped[str] = mapped_column(String(16))  # ok, failed
    last_error: Mapped[str | None] = mapped_column(Text)
    last_summary: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)


class WorkerHeartbeat(Base):
    """One worker process, alive as long as its heartbeat is recent (herald/heartbeats.py; ``herald status``)."""

    __tablename__ = "worker_heartbeats"

    node: Mapped[str] = mapped_column(String(255), primary_key=True)  # Celery's node name, pool-pid@host
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(Json)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # a warm shutdown; a killed one never says


# --- answers: who may call herald, and what they answered with --------------------------------
# Owned by herald/keys.py (API keys), herald/signin.py (people's sign-in), herald/actions.py (action
# tokens) and herald/writeback.py (webhooks to the admin platform).


class ApiKey(Base):
    """A key for integration code: one environment, one scope; only its hash is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the public part of the key
    environment: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(16))  # publish, devices, answers, read
    label: Mapped[str] = mapped_column(String(255), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 hex of the whole key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SignInToken(Base):
    """A person's one-time sign-in link (``link``, single use) or the session it yielded (``session``)."""

    __tablename__ = "sign_in_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex; the token is never stored
    kind: Mapped[str] = mapped_column(String(16))  # link, session
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # a link, once exchanged
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ActionTokenUse(Base):
    """A used action token, by its id: a token answers once."""

    __tablename__ = "action_token_uses"

    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"), index=True)
    person_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))  # applied, refused


class Answer(Base):
    """One answer as a door took it (token, API, producer, CLI): applied or refused, and why.

    An answer is applied at the door, in one transaction with its audit row and write-back; the
    ``response.*`` event it publishes (``event_id``) only tells the others. Ingest accepts a
    ``response.*`` event only if an applied answer names it, so an answer cannot be forged by
    sending a task.
    """

    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    environment: Mapped[str] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(16))  # incident, approval
    subject_id: Mapped[int] = mapped_column(Id)
    action: Mapped[str] = mapped_column(String(32))  # acknowledge, resolve, follow_up, approve, reject, request_info
    person_id: Mapped[str] = mapped_column(String(64))  # who answered, as the directory knows them
    via: Mapped[str] = mapped_column(String(16))  # token, api, producer, cli
    key_id: Mapped[str | None] = mapped_column(String(32))  # the API key, when integration code answered
    on_behalf_of: Mapped[str | None] = mapped_column(String(128))  # as the integration named the person
    token_id: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))  # applied, refused
    reason: Mapped[str | None] = mapped_column(String(255))  # why it was refused
    event_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)  # the response event telling the others

    __table_args__ = (Index("ix_answers_subject", "subject_type", "subject_id"),)


class WebhookEndpoint(Base):
    """Where the admin platform of one environment hears of answers (from the directory file).

    The signing secret is never stored: ``secret_ref`` names where it is read (``env:NAME`` or
    ``file:PATH``).
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    environment: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    secret_ref: Mapped[str] = mapped_column(String(1024))
    kinds: Mapped[list[str]] = mapped_column(Json, default=list)  # e.g. incident.*, approval.approved
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # removed from the directory file: False
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the receiver said 410 Gone
    disabled_reason: Mapped[str | None] = mapped_column(String(255))


class WebhookMessage(Base):
    """One change to tell one endpoint, delivered in order per (endpoint, subject)."""

    __tablename__ = "webhook_messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    subject: Mapped[str] = mapped_column(String(128))  # incident:12, approval:7
    kind: Mapped[str] = mapped_column(String(64))  # incident.acknowledged, approval.expired, ...
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # pending -> delivered | failed (retries used up) | cancelled (endpoint disabled or removed)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_messages_order", "endpoint_id", "subject", "id"),
                      Index("ix_webhook_messages_due", "status", "next_attempt_at"))


class WebhookAttempt(Base):
    """One try at delivering a webhook message: what the receiver answered, or why it could not."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("webhook_messages.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)  # truncated
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
