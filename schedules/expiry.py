"""The credential expiry sweep: rescan the inventory, notify each threshold once per version.

For every active credential the most urgent threshold it has crossed (``HERALD_CREDENTIAL_
THRESHOLDS_DAYS`` per environment, default 30, 14, 7, 3, 1 days, and expiry) is looked up in the
ledger ``credential_notices`` keyed by (credential, version, threshold). Only a new ledger row
publishes a notification, through the outbox in the same transaction: reruns, restarts and two
beats never notify twice, and a rotation (a new version) starts the thresholds over.

A file that cannot be read is reported once per (file, content, reason) as an operations
notification naming the file; the sweep goes on with the rest.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from herald import db, incidents, inventory
from herald.events import Severity
from herald.models import Credential, CredentialNotice, CredentialSource, utcnow
from herald.publishing import publish
from herald.settings import get_settings
from producers.helpers import credential_expiring, ops_event
from schedules.runs import Summary, run_exclusive

log = logging.getLogger(__name__)

SWEEP = "credentials"
SOURCE = "herald/sweep.credentials"
EXPIRED = 0  # the ledger's threshold for expiry itself
UNREADABLE = -1  # ... and for an unreadable file


def thresholds_for(environment: str) -> list[int]:
    settings = get_settings()
    days = settings.credential_thresholds_days.get(environment, settings.credential_default_thresholds_days)
    return sorted({int(d) for d in days if int(d) > 0})


def crossed_threshold(expires_at: datetime, now: datetime, thresholds: list[int]) -> int | None:
    """The most urgent threshold crossed: 0 once expired, else the smallest N with expiry within N days."""
    left = expires_at - now
    if left <= timedelta(0):
        return EXPIRED
    return min((t for t in thresholds if left <= timedelta(days=t)), default=None)


def severity_for(threshold: int) -> Severity:
    """Severity rises as the date nears (critical reaches people through quiet hours)."""
    if threshold <= 1:
        return Severity.critical
    if threshold <= 3:
        return Severity.error
    if threshold <= 14:
        return Severity.warning
    return Severity.info


def _ledger(s: Session, credential_id: int, version: str, threshold: int, event_id: uuid.UUID) -> bool:
    """Insert the ledger row; False when this (credential, version, threshold) was already notified."""
    insert = pg_insert if db.is_postgres() else sqlite_insert
    stmt = insert(CredentialNotice).values(credential_id=credential_id, version=version, threshold_days=threshold,
                                           event_id=event_id, notified_at=utcnow())
    # RETURNING rather than rowcount: an ORM-enabled insert does not report rowcount reliably
    inserted = s.execute(stmt.on_conflict_do_nothing(
        index_elements=["credential_id", "version", "threshold_days"]).returning(CredentialNotice.id))
    return inserted.first() is not None


def _incident_key(cred: Credential) -> str:
    return f"credential:{cred.environment}:{cred.name}"


def _open_incident(s: Session, cred: Credential) -> int:
    """An expired credential is a ticket someone must close (by rotating it); it does not escalate."""
    key = _incident_key(cred)
    incident = incidents.find_open(s, key) or incidents.open(
        s, key, environment=cred.environment, title=f"credential {cred.name} expired",
        severity=Severity.critical.value, actor=SOURCE, escalate=False, credential=cred.name,
        version=cred.fingerprint)
    return incident.id


def _close_rotated(s: Session, cred: Credential, now: datetime) -> bool:
    """A rotated credential (new version, not expired) resolves the incident its old version opened."""
    return incidents.close(s, _incident_key(cred), actor=SOURCE, action="incident.resolved", now=now,
                           reason="credential rotated", credential=cred.name, version=cred.fingerprint) is not None


def notify_expiry(s: Session, cred: Credential, now: datetime) -> int | None:
    """Notify the crossed threshold if the ledger has not seen it; return it when notified."""
    assert cred.expires_at is not None and cred.fingerprint is not None
    threshold = crossed_threshold(cred.expires_at, now, thresholds_for(cred.environment))
    if threshold != EXPIRED:
        _close_rotated(s, cred, now)
    if threshold is None:
        return None
    event_id = uuid.uuid4()
    if not _ledger(s, cred.id, cred.fingerprint, threshold, event_id):
        return None
    extra: dict[str, Any] = {"owner": cred.owner, "version_since": cred.version_since.isoformat()}
    if threshold == EXPIRED:
        extra["incident_id"] = _open_incident(s, cred)
    label = "expired" if threshold == EXPIRED else f"{threshold}d"
    event = credential_expiring(
        cred.name, kind=cred.kind, expires_at=cred.expires_at, environment=cred.environment,  # type: ignore[arg-type]
        days_left=inventory.days_left(cred.expires_at, now), threshold_days=threshold,
        fingerprint=cred.fingerprint, expired=threshold == EXPIRED, id=event_id,
        severity=Severity.critical if threshold == EXPIRED else severity_for(threshold),
        source=SOURCE, subject=f"credential {cred.name} ({cred.environment}): "
                               + ("expired" if threshold == EXPIRED else f"expires within {threshold} days"),
        idempotency_key=f"credential:{cred.environment}:{cred.name}:{cred.fingerprint}:{label}")
    # extras the catalogue allows: who owns it and since when this version is live
    event = event.model_copy(update={"data": {**event.data, **{k: v for k, v in extra.items() if v is not None}}})
    publish(event, session=s)
    log.info("credential %s (%s) version %s: notified threshold %s", cred.name, cred.environment,
             cred.fingerprint[:12], label)
    return threshold


def notify_unreadable(s: Session, cred: Credential) -> bool:
    """One operations notification per broken file content and reason, naming the file."""
    digest = str((cred.details or {}).get("error_digest") or inventory.sha256_hex((cred.error or "").encode()))
    event_id = uuid.uuid4()
    if not _ledger(s, cred.id, f"unreadable:{digest}", UNREADABLE, event_id):
        return False
    event = ops_event("credential_unreadable", cred.path or cred.name, environment=cred.environment,
                      metric="credential_file_unreadable", id=event_id, source=SOURCE,
                      subject=f"unreadable credential file {cred.path}: {cred.error}"[:255],
                      idempotency_key=f"credential-unreadable:{cred.environment}:{cred.name}:{digest}")
    event = event.model_copy(update={"data": {**event.data, "file": cred.path, "reason": cred.error,
                                              "credential": cred.name}})
    publish(event, session=s)
    log.warning("credential file %s unreadable: %s", cred.path, cred.error)
    return True


def _sweep(s: Session, now: datetime) -> Summary:
    summary: dict[str, Any] = {"read": 0, "unreadable": 0, "retired": 0, "notified": {}, "unreadable_notified": 0}
    for source in list(s.scalars(select(CredentialSource).order_by(CredentialSource.id))):
        for key, count in inventory.rescan_source(s, source).items():
            summary[key] += count
    summary["retired"] += inventory.sync_directory(s)
    for cred in list(s.scalars(select(Credential).where(Credential.active.is_(True)).order_by(Credential.id))):
        if cred.error:
            summary["unreadable_notified"] += notify_unreadable(s, cred)
            # the last good version, if any, still expires: keep warning about it
        if cred.expires_at is None or cred.fingerprint is None:
            continue
        threshold = notify_expiry(s, cred, now)
        if threshold is not None:
            label = "expired" if threshold == EXPIRED else str(threshold)
            summary["notified"][label] = summary["notified"].get(label, 0) + 1
    return summary


def sweep_credentials(now: datetime | None = None, *, min_gap_s: float = 0.0) -> Summary | None:
    """Run the expiry sweep once (None when another copy holds the lock). ``now`` simulates a date."""
    return run_exclusive(SWEEP, lambda s: _sweep(s, now or utcnow()), min_gap_s=min_gap_s)
