"""``herald demo``: the whole pipeline on whatever herald is configured for (embedded by default).

Loads the sample directory, starts one worker process on every queue with beat, publishes a
realistic burst covering all seven flows, waits until every target is terminal and summarises.

By default the messages go through the real channel code (FCM HTTP v1, APNs over HTTP/2 with a
provider token, Web Push encrypted with aes128gcm and signed with VAPID) to the local fakes
(``devtools.fakes``), started on a thread of this process with fresh keys in
``$HERALD_DATA_DIR/demo-fakes/``. The sample directory's Web Push devices are replaced by real
subscriptions made at the fake (so it can decrypt what herald sends), and the token prefixes keep
their meaning through the fakes' switches: ``dead-`` is unregistered at the provider (the device
is deactivated), ``flaky-`` fails once with the provider's transient error (the target is retried).
What the fakes received is written to ``$HERALD_DATA_DIR/demo-fakes.json``.
``dev_channel=True`` (``herald demo --dev-channel``) writes JSON lines instead (herald/channels/dev.py).

Then it answers, as people would from their phones, with the action tokens of their notifications
(herald/answers.py ``apply_token``): the open incident is acknowledged by the person it paged, the
approval is approved by an approver (and, on purpose, refused to its own requester), and the summary
reads back what those answers wrote: incident status and assignee, approval votes.
The failures the summary counts are the fakes' deliberate faults, and it says so.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import and_, func, select, update

from herald import channels, db, directory, migrate, safeyaml
from herald.models import TERMINAL_DELIVERY, Approval, ApprovalVote, Delivery, Device, EventRow, Incident, Notification
from herald.settings import get_settings

if TYPE_CHECKING:
    from devtools.fakes import FakeProviders
    from devtools.receiver import Receiver

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
    src: dict[str, Any] = {"source": f"devtools/demo/{run}"}
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


def _respond(incident_event: uuid.UUID, approval_event: uuid.UUID) -> tuple[list[int], list[uuid.UUID]]:
    """Answer as people would from their phones, with the action tokens of their notifications: the person
    paged acknowledges the incident, an approver approves; and, on purpose, the requester tries to approve
    their own request (refused). Returns the answers' ids and the ids of the events that tell the others."""
    from herald import actions, answers
    from herald.models import Answer

    with db.session() as s:
        page = s.scalars(select(Notification).where(Notification.event_id == incident_event)
                         .order_by(Notification.id).limit(1)).one()
        approval = s.scalars(select(Approval).where(Approval.event_id == approval_event)).one()
        ask = s.scalars(select(Notification).where(Notification.event_id == approval_event)
                        .order_by(Notification.id).limit(1)).one()
        outcomes = [
            answers.apply_token(s, actions.tokens_for(s, page)["acknowledge"], comment="rotating the bank certificate"),
            answers.apply(s, answers.AnswerRequest(  # refused: the requester has no token, and no vote
                subject_type="approval", subject_id=approval.id, action="approve", person=approval.requester,
                environment="prod", via="cli")),
            answers.apply_token(s, actions.tokens_for(s, ask)["approve"], comment="reviewed the spec"),
        ]
        told = [s.get_one(Answer, o.answer_id).event_id for o in outcomes if o.applied]
    return [o.answer_id for o in outcomes], [e for e in told if e is not None]


def close_earlier_runs() -> int:
    """Resolve the incidents an earlier demo run left open in this data folder (audited), so that this
    run's flow failures open incidents of their own instead of joining those; returns how many."""
    from herald import incidents
    from herald.audit import audit

    with db.session() as s:
        earlier = s.scalars(select(Incident).where(
            Incident.status != "resolved",
            Incident.id.in_(select(EventRow.incident_id).where(EventRow.source.like("devtools/demo/%"))))).all()
        for incident in earlier:
            incidents.resolve(s, incident)
            audit(s, "herald demo", "incident.resolved", "incident", incident.id, reason="an earlier demo run's")
    return len(earlier)


def _pending(ids: list[uuid.UUID]) -> int:
    with db.session() as s:
        events = s.scalar(select(func.count()).select_from(EventRow)
                          .where(EventRow.id.in_(ids), EventRow.status.not_in(DONE))) or 0
        targets = s.scalar(select(func.count()).select_from(Delivery)
                           .where(Delivery.event_id.in_(ids), Delivery.status.not_in(TERMINAL_DELIVERY))) or 0
        seen = s.scalar(select(func.count()).select_from(EventRow).where(EventRow.id.in_(ids))) or 0
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
        for flow, n in s.execute(select(EventRow.flow, func.count()).where(EventRow.id.in_(ids))
                                   .group_by(EventRow.flow)):
            flows[flow]["events"] = n
        for flow, n in s.execute(select(EventRow.flow, func.count()).join(Notification)
                                 .where(EventRow.id.in_(ids)).group_by(EventRow.flow)):
            flows[flow]["notifications"] = n
        for flow, status, n in s.execute(select(EventRow.flow, Delivery.status, func.count())
                                         .join(Delivery, Delivery.event_id == EventRow.id)
                                         .where(EventRow.id.in_(ids)).group_by(EventRow.flow, Delivery.status)):
            flows[flow]["deliveries"][status] = n
    return {"flows": flows, "pending": _pending(ids)}


# The demo switches on the sample's escalation chain for flow failures (docs/directory.md).
DEMO_CHAIN_ROUTE, DEMO_CHAIN = "flow-failures", "support-chain"


def escalations(incident_ids: list[int]) -> list[dict[str, Any]]:
    """Who each incident's escalation chain paged, at which step, and what became of it (herald/escalation.py)."""
    from herald.models import IncidentPage

    with db.session() as s:
        found = s.execute(select(IncidentPage.incident_id, IncidentPage.step, IncidentPage.person_id,
                                 IncidentPage.outcome)
                          .where(IncidentPage.incident_id.in_(incident_ids))
                          .order_by(IncidentPage.incident_id, IncidentPage.id)).all()
    return [{"incident": r.incident_id, "step": r.step, "person": r.person_id, "outcome": r.outcome} for r in found]


def email_fallbacks(ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """The pages of these events that reached nobody on a device, and what became of their e-mail (herald/unreached.py):
    the sample's ines (invoices-to-bank's owner) has an address and no device."""
    with db.session() as s:
        found = s.execute(select(Notification.person_id, EventRow.type, Delivery.status)
                          .join(EventRow, EventRow.id == Notification.event_id)
                          .outerjoin(Delivery, and_(Delivery.notification_id == Notification.id,
                                                    Delivery.channel == "email"))
                          .where(Notification.event_id.in_(ids), Notification.unreached_at.is_not(None))
                          .order_by(Notification.id)).all()
    return [{"person": r.person_id, "event": r.type, "email": r.status or "no address"} for r in found]


def failed_deliveries(ids: list[uuid.UUID], faults: list[dict[str, str]]) -> dict[str, int]:
    """Failed deliveries: on purpose (to a token the fakes refuse by design) or not."""
    deliberate = {(f["channel"], f["token"]) for f in faults}
    counts = {"deliberate": 0, "unexpected": 0}
    with db.session() as s:
        failed = (select(Device.channel, Device.token).join(Delivery, Delivery.device_id == Device.id)
                  .where(Delivery.event_id.in_(ids), Delivery.status == "failed"))
        for channel, token in s.execute(failed):
            counts["deliberate" if (channel, token) in deliberate else "unexpected"] += 1
    return counts


def written_back(incident_ids: list[int], approval_id: int | None, answers: list[int]) -> dict[str, Any]:
    """The state the answers (and the flow's recovery) wrote back, read from the database."""
    from herald.answers import ACTIONS
    from herald.models import Answer

    with db.session() as s:
        incidents = [{"id": i.id, "title": i.title, "status": i.status, "assignee": i.assignee,
                      "escalation_stopped": i.next_escalation_at is None}
                     for i in s.scalars(select(Incident).where(Incident.id.in_(incident_ids)).order_by(Incident.id))]
        approval = s.get(Approval, approval_id) if approval_id is not None else None
        votes = [{"person": v.person_id, "decision": v.decision} for v in s.scalars(
            select(ApprovalVote).where(ApprovalVote.approval_id == approval_id).order_by(ApprovalVote.id))]
        refused = [{"type": f"response.{ACTIONS[a.subject_type][a.action]}", "responder": a.person_id,
                    "reason": a.reason}
                   for a in s.scalars(select(Answer).where(Answer.id.in_(answers), Answer.outcome == "refused")
                                      .order_by(Answer.id))]
    return {"incidents": incidents,
            "approval": None if approval is None else {
                "id": approval.id, "target": f"{approval.request_kind} {approval.target}",
                "requester": approval.requester, "status": approval.status, "quorum": approval.quorum,
                "votes": votes},
            "refused": refused}


def start_worker(log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "worker", "--pool", "all", "--beat", "--kind", "threads",
         "--concurrency", "4", "--loglevel", "WARNING"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)


# Switches that give the sample's token prefixes their meaning at each fake: the provider's own
# "unregistered" answer for ``dead-``, and its transient error, once, for ``flaky-``.
FLAKY_ERROR = {"fcm": "INTERNAL*1", "apns": "ServiceUnavailable*1", "webpush": "503*1"}


# What each deliberate fault is, in the provider's words, and what herald does about it.
FAULTS = {
    "dead": {"fcm": "unregistered (FCM 404 UNREGISTERED)", "apns": "unregistered (APNs 410 Unregistered)",
             "webpush": "subscription gone (Web Push 410)",
             "then": "its deliveries fail and herald deactivates the device"},
    "flaky": {"fcm": "one transient error (FCM 500 INTERNAL)", "apns": "one transient error (APNs 503)",
              "webpush": "one transient error (Web Push 503)", "then": "herald retries it, and the retry is sent"},
}
DEV_FAULTS = {"dead": "unregistered (the development channel's dead- prefix)",
              "flaky": "one transient error (the development channel's flaky- prefix)"}


def _fault(channel: str, name: str, token: str, person: str, *, dev: bool) -> dict[str, str] | None:
    """The deliberate fault a sample token's prefix stands for (dead-, flaky-), or None."""
    kind = name.partition("-")[0]
    if kind not in FAULTS:
        return None
    return {"channel": channel, "token": token, "person": person,
            "fault": DEV_FAULTS[kind] if dev else FAULTS[kind][channel], "then": FAULTS[kind]["then"]}


def sample_faults() -> list[dict[str, str]]:
    """The sample directory's deliberate faults as the development channel plays them."""
    spec, _node = safeyaml.parse(SAMPLE.read_text(), where=str(SAMPLE))
    found = [_fault(d["channel"], d.get("token") or d.get("fid") or "", d.get("token") or d.get("fid") or "",
                    p["id"], dev=True) for p in spec.get("people", []) for d in p.get("devices", [])]
    return [f for f in found if f is not None]


def demo_directory(fakes: FakeProviders, folder: Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    """The sample directory with its devices pointed at the fakes.

    Returns (file, Web Push tokens, the deliberate faults: channel, token, fault, then).

    Every Web Push device becomes a real subscription made at the fake for herald's VAPID key, as
    a browser's ``PushManager.subscribe()`` would; FCM and APNs tokens are kept as they are, and
    the fakes' switches are set from their prefixes.
    """
    from herald.channels import vapid

    application_server_key = vapid.b64url(vapid.public_bytes(vapid.load(fakes.keys.vapid_key_file)))
    spec, _node = safeyaml.parse(SAMPLE.read_text(), where=str(SAMPLE))
    subscriptions: list[str] = []
    faults: list[dict[str, str]] = []
    switches: dict[str, dict[str, Any]] = {n: {"dead_tokens": set(), "errors": {}} for n in FLAKY_ERROR}
    for person in spec.get("people", []):
        for device in person.get("devices", []):
            channel = device["channel"]
            name = device.get("token") or device.get("fid") or ""
            if channel == "webpush":
                name = str(device["subscription"]["endpoint"]).rsplit("/", 1)[-1]
                device["subscription"] = fakes.call(lambda: fakes.webpush.subscribe(application_server_key))
                subscriptions.append(json.dumps(device["subscription"], sort_keys=True))
                token = fakes.webpush.endpoint_token(device["subscription"])
            else:
                token = name
            if name.startswith("dead-"):
                switches[channel]["dead_tokens"].add(token)
            elif name.startswith("flaky-"):
                switches[channel]["errors"][token] = FLAKY_ERROR[channel]
            fault = _fault(channel, name, token, person["id"], dev=False)
            if fault is not None:
                faults.append(fault)

    def configure() -> None:
        for channel, values in switches.items():
            fakes.providers[channel].switches.dead_tokens = values["dead_tokens"]
            fakes.providers[channel].switches.errors = values["errors"]

    fakes.call(configure)
    path = folder / "demo-directory.yaml"
    path.write_text("# The sample directory with its devices pointed at the demo's fakes (herald demo).\n"
                    + yaml.safe_dump(spec, sort_keys=False))
    return path, subscriptions, faults


def fakes_report(fakes: FakeProviders, path: Path) -> dict[str, Any]:
    """What each fake received, written to ``path``; returns counts per provider and status."""
    def snapshot() -> dict[str, Any]:
        return {name: list(p.seen) for name, p in fakes.providers.items()}

    seen = fakes.call(snapshot)
    path.write_text(json.dumps(seen, indent=1, default=str))
    counts: dict[str, Any] = {}
    for name, entries in seen.items():
        by_status: dict[str, int] = {}
        for entry in entries:
            by_status[str(entry.get("status"))] = by_status.get(str(entry.get("status")), 0) + 1
        counts[name] = {"requests": len(entries), "by_status": by_status}
    counts["webpush"]["decrypted"] = sum(1 for e in seen["webpush"] if e.get("text"))
    return counts


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# The admin platform's side of the write-back (flow 7): a local receiver that verifies each webhook's
# signature, as docs/webhooks.md tells a receiver to. Its secret is made per run and reaches the worker
# through this variable (a directory entry names where a secret is read, never the secret itself).
WEBHOOK_SECRET_ENV = "HERALD_DEMO_WEBHOOK_SECRET"
WRITTEN_BACK_KINDS = {"incident.acknowledged", "approval.approved"}  # what the demo's answers write back


def start_receiver(folder: Path) -> Receiver:
    from devtools.receiver import Receiver

    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    os.environ[WEBHOOK_SECRET_ENV] = secret
    os.environ["HERALD_WEBHOOK_ALLOW_LOOPBACK"] = "true"  # the receiver listens on this machine
    get_settings.cache_clear()
    out = folder / "demo-webhooks.jsonl"
    out.unlink(missing_ok=True)
    return Receiver(secret, out=out).start()


def with_webhooks(source: Path, receiver: Receiver, folder: Path) -> Path:
    """The directory file ``source`` plus one webhook endpoint per environment, all at ``receiver``."""
    from devtools.receiver import endpoints

    spec, _node = safeyaml.parse(source.read_text(), where=str(source))
    spec["webhooks"] = endpoints(receiver.url, f"env:{WEBHOOK_SECRET_ENV}", get_settings().environments)
    for route in spec.get("routes", []):  # the sample's chain, switched on: a failure pages its on-call at once
        if route.get("id") == DEMO_CHAIN_ROUTE:
            route["escalation"] = DEMO_CHAIN
    path = folder / "demo-directory.yaml"
    path.write_text("# The sample directory as herald demo uses it: devices at the demo's fakes (unless\n"
                    "# --dev-channel), webhooks at its local receiver.\n" + yaml.safe_dump(spec, sort_keys=False))
    return path


def webhooks_received(receiver: Receiver, deadline: float) -> dict[str, Any]:
    """Wait (until ``deadline``) for the write-back of the demo's answers; what the receiver verified."""
    def kinds() -> set[str]:
        return {str(p.get("type")) for p in receiver.verified}

    while not kinds() >= WRITTEN_BACK_KINDS and time.monotonic() < deadline:
        time.sleep(0.1)
    # in the order the answers were given (their timestamp), not the order they arrived: the deliveries run in parallel
    answered = sorted(receiver.verified, key=lambda p: str(p.get("timestamp", "")))
    return {"url": receiver.url, "verified": [{"kind": p.get("type"), "subject": p.get("subject")} for p in answered],
            "refused": sum(1 for r in receiver.received if r.payload is None),
            "missing": sorted(WRITTEN_BACK_KINDS - kinds()),
            "log": str(receiver.out)}


def run(timeout_s: float = 120.0, progress: Any = None, *, dev_channel: bool = False) -> dict[str, Any]:
    """Run the demo; ``dev_channel`` writes JSON lines instead of sending to the fakes."""
    from producers import publish

    settings = get_settings()
    migrate.upgrade()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fakes: FakeProviders | None = None
    worker_env: dict[str, str] = {f"HERALD_{c.upper()}_BACKEND": "dev" for c in channels.names()}
    directory_file = SAMPLE
    subscriptions: list[str] = []
    faults = sample_faults()  # deliberate, by token prefix; the fakes' own replace these below
    answers: list[int] = []
    incident_ids: list[int] = []
    approval_id: int | None = None
    if not dev_channel:
        from devtools.fakes import FakeProviders

        # The fakes' Web Push subscriptions point at this machine: this process registers them too.
        os.environ["HERALD_WEBPUSH_ALLOW_LOOPBACK"] = "true"
        get_settings.cache_clear()
        fakes = FakeProviders(settings.data_dir / "demo-fakes").start_in_thread()
        worker_env = fakes.env()
        directory_file, subscriptions, faults = demo_directory(fakes, settings.data_dir)
        if progress:
            progress(f"fakes of FCM, APNs, Web Push and SMTP listening ({fakes.urls['control']})")
    receiver = start_receiver(settings.data_dir)
    directory_file = with_webhooks(directory_file, receiver, settings.data_dir)
    with db.session() as s:
        directory.apply(directory.load(directory_file), s)
        if not dev_channel:
            # Subscriptions made at an earlier demo's fakes died with them (compared by endpoint: the
            # stored token is the subscription in herald's own normal form).
            endpoints = {json.loads(sub)["endpoint"] for sub in subscriptions}
            live = s.execute(select(Device.id, Device.token)
                             .where(Device.channel == "webpush", Device.active.is_(True)))
            stale = [ident for ident, token in live if json.loads(token)["endpoint"] not in endpoints]
            s.execute(update(Device).where(Device.id.in_(stale))
                      .values(active=False, deactivated_reason="demo: subscription of an earlier run"))
    close_earlier_runs()
    run_id = uuid.uuid4().hex[:8]
    log_path = settings.data_dir / "demo-worker.log"
    proc = start_worker(log_path, worker_env)
    deadline = time.monotonic() + timeout_s
    seen_by_fakes: dict[str, Any] | None = None
    try:
        ids = [publish(event) for event in _burst(run_id)]
        if progress:
            progress(f"published {len(ids)} events; waiting for the pipeline")
        _wait(ids, deadline)
        with db.session() as s:
            # orders-to-erp's incident is closed by its flow.recovered; invoices-to-bank's stays open: answer it
            incident_ids = [i for i in s.scalars(select(EventRow.incident_id).where(EventRow.id.in_([ids[3], ids[5]])))
                            if i is not None]
            incident_id = s.scalar(select(EventRow.incident_id).where(EventRow.id == ids[5]))
            approval_id = s.scalar(select(Approval.id).where(Approval.event_id == ids[6]))
        if incident_id is not None and approval_id is not None:
            answers, told = _respond(ids[5], ids[6])
            ids += told
            if progress:
                progress(f"answered {len(answers)} times with action tokens; waiting for the pipeline")
            _wait(ids, deadline)
        result = summary(ids)
        result["webhooks"] = webhooks_received(receiver, deadline)
        result["failed"] = failed_deliveries(ids, faults)
        result["email_fallback"] = email_fallbacks(ids)
        result["escalations"] = escalations(sorted(set(incident_ids)))
        result["written_back"] = written_back(sorted(set(incident_ids)), approval_id, answers)
    finally:
        stop_worker(proc)
        receiver.stop()
        if fakes is not None:
            seen_by_fakes = fakes_report(fakes, settings.data_dir / "demo-fakes.json")
            fakes.stop_thread()
    result["dev_output"] = settings.dev_output_path if dev_channel else None
    result["fakes"] = seen_by_fakes
    result["deliberate_faults"] = faults
    result["fakes_seen"] = str(settings.data_dir / "demo-fakes.json") if fakes is not None else None
    result["worker_log"] = str(log_path)
    result["responder"] = responder_page()
    return result


def responder_page(person: str = "alice") -> dict[str, str]:
    """The responder page's address (`herald api` serves it on this database) and a one-time sign-in link to it
    for one sample person."""
    from herald import signin

    base = get_settings().public_url.rstrip("/")
    with db.session() as s:
        link = signin.create_link(s, person)
    return {"url": f"{base}/app/", "person": person, "link": f"{base}/app/#signin={link}"}
