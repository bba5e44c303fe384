"""Typed helpers, one per event family: each builds and validates an :class:`Event`.

    from producers import publish, flow_failed
    publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 500 from ERP"))
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from herald.events import Event, make_event

ArtifactKind = Literal["api", "mapping", "messaging"]


def _event(type: str, environment: str, data: dict[str, Any], **fields: Any) -> Event:
    return make_event(type, {k: v for k, v in data.items() if v is not None}, environment=environment,
                      **{k: v for k, v in fields.items() if v is not None})


# 1. artifact lifecycle
def artifact_event(change: Literal["deployed", "updated", "retired"], artifact: str, *,
                   kind: ArtifactKind, environment: str, version: str | None = None,
                   actor: str | None = None, **fields: Any) -> Event:
    return _event(f"artifact.{change}", environment,
                  {"artifact": artifact, "kind": kind, "version": version, "actor": actor}, **fields)


def artifact_deployed(artifact: str, **kw: Any) -> Event:
    return artifact_event("deployed", artifact, **kw)


def artifact_updated(artifact: str, **kw: Any) -> Event:
    return artifact_event("updated", artifact, **kw)


def artifact_retired(artifact: str, **kw: Any) -> Event:
    return artifact_event("retired", artifact, **kw)


# 2. flow failures
def flow_event(what: Literal["failed", "retry_exhausted", "credential_error", "recovered", "escalated"], flow: str, *,
               environment: str, error: str | None = None, attempts: int | None = None,
               credential: str | None = None, dedup_key: str | None = None, **fields: Any) -> Event:
    return _event(f"flow.{what}", environment, {"flow": flow, "error": error, "attempts": attempts,
                                                "credential": credential, "dedup_key": dedup_key}, **fields)


def flow_failed(flow: str, **kw: Any) -> Event:
    return flow_event("failed", flow, **kw)


def flow_recovered(flow: str, **kw: Any) -> Event:
    return flow_event("recovered", flow, **kw)


# 3. approvals
def approval_requested(*, request_kind: Literal["api", "credential_set", "environment_change"], target: str,
                       requester: str, expires_at: datetime, environment: str, quorum: int = 1,
                       summary: str | None = None, **fields: Any) -> Event:
    return _event("approval.requested", environment,
                  {"request_kind": request_kind, "target": target, "requester": requester, "quorum": quorum,
                   "expires_at": expires_at.isoformat(), "summary": summary}, **fields)


# 4. business events
def business_event(kind: Literal["order_submitted", "shipment_status", "invoice_posted",
                                 "partner_onboarding"], *, topic: str, reference: str, environment: str,
                   status: str | None = None, partner: str | None = None, summary: str | None = None,
                   **fields: Any) -> Event:
    return _event(f"business.{kind}", environment, {"topic": topic, "reference": reference, "status": status,
                                                    "partner": partner, "summary": summary}, **fields)


# 5. credentials
def credential_expiring(credential: str, *, kind: Literal["certificate", "token", "api_key", "client_secret"],
                        expires_at: datetime, environment: str, days_left: int | None = None,
                        threshold_days: int | None = None, fingerprint: str | None = None,
                        expired: bool = False, **fields: Any) -> Event:
    return _event("credential.expired" if expired else "credential.expiring", environment,
                  {"credential": credential, "kind": kind, "expires_at": expires_at.isoformat(),
                   "days_left": days_left, "threshold_days": threshold_days, "fingerprint": fingerprint},
                  **fields)


# 6. operations
def ops_event(condition: Literal["queue_backlog", "processing_delayed", "sla_breached", "credential_unreadable",
                                 "dead_letters"],
              resource: str, *,
              environment: str, metric: str | None = None, value: float | None = None,
              threshold: float | None = None, cleared: bool = False, **fields: Any) -> Event:
    return _event(f"ops.{condition}{'_cleared' if cleared else ''}", environment,
                  {"resource": resource, "metric": metric, "value": value, "threshold": threshold}, **fields)


# 7. responses are not events integration code builds: an answer goes through a door
# (producers.respond, the HTTP API, an action token), which applies it (herald/answers.py).
