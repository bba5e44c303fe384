"""Each of the seven flows end to end: publish -> terminal deliveries, right people, recorded reasons."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from herald import db, keys
from herald.models import (
    Answer,
    Approval,
    AuditLog,
    Delivery,
    Device,
    DueWork,
    EventRow,
    Incident,
    Notification,
    Outbox,
)
from producers import (
    AnswerRefused,
    approval_requested,
    artifact_deployed,
    business_event,
    credential_expiring,
    flow_failed,
    flow_recovered,
    ops_event,
    publish,
    respond,
)
from tests.integration.conftest import TEST_ENV, Workers, wait_until
from tests.integration.helpers import all_done, rows

# APNs tokens of the sample directory (devtools/samples/directory.yaml)
BRUNO_IPHONE = "e2fad090ef691ee4e035178562f08c0e262c9458572d5933b21f44a070564b85"
DANA_IPHONE = "97395269b5045e46036b9659d5f26ce13bef677975f0bbc49d52c47b495c1f30"


def answers_key() -> str:
    """An API key for integration code answering on people's behalf (producers.respond)."""
    with db.session() as s:
        _, key = keys.create(s, environment="prod", scope="answers")
    return key


def told_by(answer_id: int) -> uuid.UUID:
    """The response event an applied answer published (it tells the others)."""
    [(event_id,)] = rows(select(Answer.event_id).where(Answer.id == answer_id))
    return event_id


def on_call_in(rotation_id: str) -> tuple[str, str]:
    from herald.directory import on_call_now
    from herald.models import Rotation

    with db.session() as s:
        rotation = s.get_one(Rotation, rotation_id)
        holder = on_call_now(rotation, datetime.now(UTC))
        assert holder is not None, f"nobody is on call in {rotation_id}"
        return holder, next(m for m in rotation.members if m != holder)


def notified(event_id) -> dict[str, tuple[str, str]]:
    """person -> (reason, status) for an event's notifications."""
    return {r.person_id: (r.reason, r.status) for r in rows(
        select(Notification.person_id, Notification.reason, Notification.status)
        .where(Notification.event_id == event_id))}


def delivered_to(event_id) -> dict[str, str]:
    """device token -> delivery status."""
    return {r.token: r.status for r in rows(
        select(Device.token, Delivery.status).join(Device, Device.id == Delivery.device_id)
        .where(Delivery.event_id == event_id))}


@pytest.fixture
def pipeline(workers: Workers, sample_directory: None) -> Workers:
    workers.start("all", concurrency=4, kind="threads")
    return workers


def test_artifact_lifecycle_reaches_leads_qa_and_release(pipeline: Workers) -> None:
    event_id = publish(artifact_deployed("orders-api", kind="api", environment="test", version="2.4"))
    wait_until(lambda: all_done([event_id]), message="artifact event delivered")
    people = notified(event_id)
    assert people == {
        # a notification's status follows its deliveries: bruno's dead tablet does not undo his iPhone
        "alice": ("route artifact-changes: team:integration-leads", "sent"),
        "bruno": ("route artifact-changes: team:integration-leads", "sent"),
        "chen": ("route artifact-changes: team:qa", "sent"),
        # dana's quiet hours cover the whole day and this is not critical
        "dana": ("route artifact-changes: team:release", "suppressed"),
    }
    targets = delivered_to(event_id)
    assert targets["fcm-alice-pixel"] == "sent"
    assert targets[BRUNO_IPHONE] == "sent"
    assert targets["dead-fcm-bruno-old-tablet"] == "failed"  # provider: unregistered
    assert targets["flaky-fcm-chen"] == "sent"  # after one transient failure
    assert not any("sub/chen" in t for t in targets)  # chen opted out of web push
    # the dead token was deactivated; the message the phone got names the artifact
    assert rows(select(Device.active).where(Device.token == "dead-fcm-bruno-old-tablet")) == [(False,)]
    lines = [json.loads(x) for x in Path(TEST_ENV["HERALD_DEV_OUTPUT"]).read_text().splitlines()]
    assert any(x["title"] == "[test] artifact deployed: orders-api" and x["to"] == "fcm-alice-pixel"
               for x in lines)


def test_flow_failures_group_into_one_incident_and_recovery_closes_it(pipeline: Workers) -> None:
    first = publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502"))
    wait_until(lambda: all_done([first]))
    second = publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502 again"))
    wait_until(lambda: all_done([second]))
    incidents = rows(select(Incident.id, Incident.status, Incident.event_count))
    assert len(incidents) == 1 and incidents[0].event_count == 2 and incidents[0].status == "open"
    # the responder on call now (chen or bruno, by the week) and the flow's owning team (both)
    on_call, other = on_call_in("support-primary")
    assert notified(first) == {on_call: ("route flow-failures: on_call:support-primary", "sent"),
                               other: ("route flow-failures: owners", "sent")}
    assert notified(second) == {}  # joined the open incident: nobody is told twice
    recovered = publish(flow_recovered("orders-to-erp", environment="prod"))
    wait_until(lambda: all_done([recovered]))
    assert rows(select(Incident.status))[0].status == "resolved"


def test_approval_skips_requester_and_answers_are_written_back(pipeline: Workers) -> None:
    expires = datetime.now(UTC) + timedelta(hours=4)
    request = publish(approval_requested(request_kind="credential_set", target="orders-api", requester="alice",
                                         quorum=2, expires_at=expires, environment="prod"))
    wait_until(lambda: all_done([request]))
    people = notified(request)
    assert "alice" not in people  # never the requester
    assert set(people) == {"bruno", "dana"}
    approval_id = rows(select(Approval.id))[0].id
    key = answers_key()
    with pytest.raises(AnswerRefused, match="the requester cannot answer their own approval"):
        respond("approve", key=key, on_behalf_of="alice", approval_id=approval_id)
    one = told_by(respond("approve", key=key, on_behalf_of="bruno", approval_id=approval_id).answer_id)
    wait_until(lambda: all_done([one]))
    assert rows(select(Approval.status)) == [("pending",)]  # quorum 2, one valid vote
    assert "alice" not in notified(one)  # the requester hears the decision, not each vote
    two = told_by(respond("approve", key=key, on_behalf_of="dana", approval_id=approval_id).answer_id)
    wait_until(lambda: all_done([two]))
    assert rows(select(Approval.status)) == [("approved",)]
    # the requester hears the decision; bruno's request is replaced; dana gets no echo of her own vote
    assert notified(two)["alice"][0] == "route answers-to-requesters: requester"
    assert "bruno" in notified(two) and "dana" not in notified(two)
    actions = [r.action for r in rows(select(AuditLog.action).where(AuditLog.subject_type == "approval")
                                      .order_by(AuditLog.id))]
    assert actions == ["approval.approve.refused", "approval.approve", "approval.approve"]


def test_business_event_reaches_topic_subscribers_with_ids_only(pipeline: Workers) -> None:
    event_id = publish(business_event("order_submitted", topic="orders.eu", reference="PO-1", environment="prod",
                                      summary="secret customer details"))
    wait_until(lambda: all_done([event_id]))
    assert {p: r for p, (r, _) in notified(event_id).items()} == {
        "emil": "route business-subscribers: subscribers", "fatima": "route business-subscribers: subscribers"}
    text = Path(TEST_ENV["HERALD_DEV_OUTPUT"]).read_text()
    assert "secret customer details" not in text  # ids only: the app fetches details when opened
    assert str(event_id) in text


def test_credential_expiry_reaches_owners_and_critical_passes_quiet_hours(pipeline: Workers) -> None:
    soon = datetime.now(UTC) + timedelta(days=3)
    event_id = publish(credential_expiring("erp-client-cert", kind="certificate", expires_at=soon, days_left=3,
                                           environment="prod"))
    wait_until(lambda: all_done([event_id]))
    assert notified(event_id) == {"alice": ("route credential-owners: owners", "sent")}


def test_operations_reach_managers_and_owners_critical_through_quiet_hours(pipeline: Workers) -> None:
    breach = publish(ops_event("sla_breached", "edi-inbound", environment="prod", value=40, threshold=15))
    wait_until(lambda: all_done([breach]))
    people = notified(breach)
    assert people["dana"] == ("route operations: team:operations", "sent")  # critical: quiet hours pass
    assert people["alice"] == ("route operations: owners", "sent")
    assert delivered_to(breach)[DANA_IPHONE] == "sent"


def test_a_notification_whose_every_delivery_failed_says_so(workers: Workers, tmp_path: Path) -> None:
    from herald import db, directory

    # given gil, whose every device is refused by its provider, and hana, with one good device
    spec = tmp_path / "directory.yaml"
    spec.write_text("""
people:
  - {id: gil, name: Gil, subscriptions: [orders.eu], devices: [{channel: fcm, token: bad-fcm-gil},
                                                               {channel: fcm, token: dead-fcm-gil}]}
  - {id: hana, name: Hana, subscriptions: [orders.eu], devices: [{channel: fcm, token: fcm-hana}]}
routes:
  - {id: orders, match: {types: ["business.*"]}, recipients: [{subscribers: true}]}
""")
    with db.session() as s:
        directory.apply(directory.load(spec), s)
    workers.start("all", concurrency=2, kind="threads")
    # when an order is published to their topic
    event_id = publish(business_event("order_submitted", topic="orders.eu", reference="PO-9", environment="prod"))
    wait_until(lambda: all_done([event_id]))
    # then gil's notification failed (every delivery ended unsent) and hana's was sent
    assert {p: st for p, (_, st) in notified(event_id).items()} == {"gil": "failed", "hana": "sent"}
    assert delivered_to(event_id) == {"bad-fcm-gil": "failed", "dead-fcm-gil": "failed", "fcm-hana": "sent"}


def test_acknowledgement_updates_the_incident(pipeline: Workers) -> None:
    failure = publish(flow_failed("orders-to-erp", environment="prod"))
    wait_until(lambda: all_done([failure]))
    incident_id = rows(select(Incident.id))[0].id
    # the open incident has its escalation step waiting in Postgres
    assert rows(select(DueWork.kind, DueWork.subject, DueWork.step, DueWork.state)) == [
        ("incident.escalate", str(incident_id), 1, "due")]
    assert rows(select(Incident.next_escalation_at))[0][0] is not None
    on_call, other = on_call_in("support-primary")
    ack = told_by(respond("acknowledge", key=answers_key(), on_behalf_of=on_call, incident_id=incident_id).answer_id)
    wait_until(lambda: all_done([ack]))
    incident = rows(select(Incident.status, Incident.assignee, Incident.next_escalation_at))[0]
    assert (incident.status, incident.next_escalation_at) == ("acknowledged", None)
    assert incident.assignee == on_call
    assert rows(select(DueWork.state)) == [("cancelled",)]  # acknowledged: it stops escalating
    # the other one paged sees it taken; the one who acknowledged gets no echo
    assert other in notified(ack) and on_call not in notified(ack)


def test_plain_celery_command_runs_the_pools(workers: Workers, sample_directory: None) -> None:
    # given the pools started with plain celery rather than `herald worker`
    import os
    import subprocess
    import sys

    from tests.integration.conftest import DATA_DIR, ROOT, track_log

    log = open(track_log(DATA_DIR / "plain-celery.log"), "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "herald.app", "worker", "-Q",
                             "ingest,enrich,resolve,deliver.fcm,deliver.apns,deliver.webpush,retry",
                             "-P", "threads", "-c", "2"], cwd=ROOT, env=os.environ.copy(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    workers.procs.append(proc)
    # when an event is published, then it is delivered
    event_id = publish(artifact_deployed("orders-api", kind="api", environment="test"))
    wait_until(lambda: all_done([event_id]))
    assert delivered_to(event_id)["fcm-alice-pixel"] == "sent"


def test_an_unacknowledged_incident_escalates_until_someone_acknowledges(workers: Workers,
                                                                         sample_directory: None) -> None:
    # given escalation every two seconds, up to level 3, and the due-work tick running under beat
    fast = {"HERALD_ESCALATE_AFTER_S": "2", "HERALD_ESCALATION_MAX_LEVEL": "3", "HERALD_DUE_TICK_INTERVAL_S": "0.5"}
    workers.start("all", concurrency=4, kind="threads", beat=True, env=fast)
    failure = publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502"))

    def escalations() -> list[tuple[uuid.UUID, dict[str, Any]]]:
        return rows(select(EventRow.id, EventRow.data).where(EventRow.type == "flow.escalated")
                    .order_by(EventRow.received_at))

    # when nobody answers, then the on-call responder and the owners are paged again at level 1
    wait_until(lambda: len(escalations()) >= 1, message="first escalation")
    first_id, first_data = escalations()[0]
    assert first_data["level"] == 1 and first_data["incident_id"] == rows(select(Incident.id))[0].id
    wait_until(lambda: all_done([first_id]))
    on_call, other = on_call_in("support-primary")
    assert set(notified(first_id)) == {on_call, other}
    assert rows(select(EventRow.incident_id).where(EventRow.id == first_id))[0][0] == first_data["incident_id"]
    # and when someone acknowledges, escalation stops where it is
    ack = told_by(respond("acknowledge", key=answers_key(), on_behalf_of=on_call,
                          incident_id=first_data["incident_id"]).answer_id)
    wait_until(lambda: all_done([ack]))
    level = rows(select(Incident.escalation_level))[0][0]
    # then nothing is left that could escalate it (its steps are cancelled, none is running: a tick's claim
    # commits with its step), and once every page already sent has gone through the pipeline ...
    wait_until(pipeline_settled, message="every published event ingested and done")
    assert rows(select(DueWork.step, DueWork.state).where(DueWork.state == "due")) == []
    # ... each level paged exactly once, and nothing escalated after the acknowledgement
    assert rows(select(Incident.escalation_level))[0][0] == level
    assert sorted(data["level"] for _, data in escalations()) == list(range(1, level + 1))
    assert all_done([failure])


def pipeline_settled() -> bool:
    """Every event published so far (through the outbox) was ingested, and each has gone through the pipeline."""
    if rows(select(Outbox.id).where(Outbox.ingested_at.is_(None))):
        return False
    return all_done([r.id for r in rows(select(EventRow.id))])
