"""``herald demo``: the whole pipeline on whatever herald is configured for (embedded by default).

Loads the sample directory, starts one worker process on every queue with beat, publishes a
realistic burst covering all seven flows, waits until every target is terminal and summarises.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from herald import db, directory, migrate
from herald.models import TERMINAL_DELIVERY, Approval, Delivery, Event, Notification
from herald.settings import get_settings

SAMPLE = Path(__file__).parent / "samples" / "directory.yaml"
FLOWS = ("artifact", "failure", "approval", "business", "credential", "operations", "response")
DONE = ("resolved", "grouped", "refused")


def _burst(run: str) -> list[Any]:
    from producers import (
        approval_requested,
        artifact_deployed,
        artifact_retired,
        artifact_updated,
        business_event,
        credential_expiring,
        flow_event,
        flow_failed,
        flow_recovered,
        ops_event,
    )

    soon = datetime.now(UTC) + timedelta(days=2)
    src: dict[str, Any] = {"source": f"herald/demo/{run}"}
    return [
        artifact_deployed("orders-api", kind="api", environment="test", version="2.4.0", actor="alice", **src),
        artifact_updated("invoice-mapping", kind="mapping", environment="dev", version="1.3", **src),
        artifact_retired("legacy-edi-queue", kind="messaging", environment="test", **src),
        flow_failed("orders-to-erp", environment="prod", error="HTTP 502 from ERP gateway", attempts=1, **src),
        flow_failed("orders-to-erp", environment="prod", error="HTTP 502 from ERP gateway", attempts=2, **src),
        flow_event("credential_error", "invoices-to-bank", environment="prod", credential="erp-client-cert",
                   error="TLS handshake: certificate expired", **src),
        approval_requested(request_kind="api", target="orders-api", requester="bruno", quorum=1,
                           expires_at=soon, environment="prod", summary="publish orders-api v2 to partners",
                           **src),
        business_event("order_submitted", topic="orders.eu", reference="PO-88121", environment="prod",
                       summary="Order PO-88121 from ACME, 14 lines", **src),
        business_event("shipment_status", topic="shipments.eu", reference="SHP-5531", status="delivered",
                       environment="prod", **src),
        business_event("invoice_posted", topic="orders.eu", reference="INV-2026-0042", environment="prod", **src),
        business_event("partner_onboarding", topic="partners.onboarding", reference="GLOBEX",
                       status="AS2 certificates exchanged", environment="prod", **src),
        credential_expiring("erp-client-cert", kind="certificate", expires_at=soon, days_left=2,
                            threshold_days=3, environment="prod", **src),
        credential_expiring("erp-client-cert", kind="certificate", expires_at=soon, environment="prod",
                            expired=True, severity="critical", **src),
        ops_event("queue_backlog", "edi-inbound", environment="prod", metric="depth", value=12500,
                  threshold=10000, **src),
        ops_event("sla_breached", "edi-inbound", environment="prod", metric="minutes to first delivery",
                  value=42, threshold=15, **src),
        ops_event("queue_backlog", "edi-inbound", environment="prod", metric="depth", value=800,
                  threshold=10000, cleared=True, **src),
        flow_recovered("orders-to-erp", environment="prod", **src),
    ]


def _responses(run: str, incident_id: int, approval_id: int) -> list[Any]:
    from producers import respond

    src: dict[str, Any] = {"source": f"herald/demo/{run}"}
    return [
        respond("acknowledged", responder="chen", incident_id=incident_id, environment="prod",
                comment="looking at the ERP gateway", **src),
        respond("approved", responder="bruno", approval_id=approval_id, environment="prod", **src),  # refused
        respond("approved", responder="alice", approval_id=approval_id, environment="prod",
                comment="reviewed the spec", **src),
    ]


def _pending(ids: list[uuid.UUID]) -> int:
    with db.session() as s:
        events = s.scalar(select(func.count()).select_from(Event)
                          .where(Event.id.in_(ids), Event.status.not_in(DONE))) or 0
        targets = s.scalar(select(func.count()).select_from(Delivery)
                           .where(Delivery.event_id.in_(ids), Delivery.status.not_in(TERMINAL_DELIVERY))) or 0
        seen = s.scalar(select(func.count()).select_from(Event).where(Event.id.in_(ids))) or 0
    return events + targets + (len(ids) - seen)


def _wait(ids: list[uuid.UUID], deadline: float) -> int:
    pending = _pending(ids)
    while pending and time.monotonic() < deadline:
        time.sleep(0.3)
        pending = _pending(ids)
    return pending


def summary(ids: list[uuid.UUID]) -> dict[str, Any]:
    flows: dict[str, dict[str, Any]] = {f: {"events": 0, "notifications": 0, "deliveries": {}} for f in FLOWS}
    with db.session() as s:
        for flow, n in s.execute(select(Event.flow, func.count()).where(Event.id.in_(ids)).group_by(Event.flow)):
            flows[flow]["events"] = n
        for flow, n in s.execute(select(Event.flow, func.count()).join(Notification)
                                 .where(Event.id.in_(ids)).group_by(Event.flow)):
            flows[flow]["notifications"] = n
        for flow, status, n in s.execute(select(Event.flow, Delivery.status, func.count())
                                         .join(Delivery, Delivery.event_id == Event.id)
                                         .where(Event.id.in_(ids)).group_by(Event.flow, Delivery.status)):
            flows[flow]["deliveries"][status] = n
    return {"flows": flows, "pending": _pending(ids)}


def start_worker(log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "herald", "worker", "--pool", "all", "--beat", "--kind", "threads",
         "--concurrency", "4", "--loglevel", "WARNING"],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(timeout_s: float = 120.0, progress: Any = None) -> dict[str, Any]:
    from producers import publish

    settings = get_settings()
    migrate.upgrade()
    with db.session() as s:
        directory.apply(directory.load(SAMPLE), s)
    run_id = uuid.uuid4().hex[:8]
    log_path = settings.data_dir / "demo-worker.log"
    proc = start_worker(log_path)
    deadline = time.monotonic() + timeout_s
    try:
        ids = [publish(event) for event in _burst(run_id)]
        if progress:
            progress(f"published {len(ids)} events; waiting for the pipeline")
        _wait(ids, deadline)
        with db.session() as s:
            incident_id = s.scalar(select(Event.incident_id).where(Event.id == ids[3]))
            approval_id = s.scalar(select(Approval.id).where(Approval.event_id == ids[6]))
        if incident_id is not None and approval_id is not None:
            answers = [publish(event) for event in _responses(run_id, incident_id, approval_id)]
            ids += answers
            if progress:
                progress(f"published {len(answers)} answers; waiting for the pipeline")
            _wait(ids, deadline)
        result = summary(ids)
    finally:
        stop_worker(proc)
    result["dev_output"] = settings.dev_output_path
    result["worker_log"] = str(log_path)
    return result
