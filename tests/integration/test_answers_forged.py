"""Issue 10's forged answers, through the real doors on the real services: each is refused and audited.

Given a directory where bruno requests, dana and emil approve, chen is on call, fatima is in the
directory but asked nothing, and mallory is nobody; the answers come through the producer door
(``producers.respond`` with an API key of the answers scope) or are forged as ``herald.ingest``
tasks, as anyone with Flower's login could send them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from herald import db, directory, keys
from herald.app import app
from herald.events import make_event
from herald.models import (
    Answer,
    Approval,
    ApprovalVote,
    AuditLog,
    DeadLetter,
    DueWork,
    EventRow,
    Incident,
    Notification,
    WebhookEndpoint,
    WebhookMessage,
)
from producers import AnswerRefused, approval_requested, flow_failed, flow_recovered, publish, respond
from schedules.approvals import sweep_approvals
from tests.integration.conftest import TEST_ENV, Workers, wait_until
from tests.integration.helpers import all_done, rows

DIRECTORY = """
people:
  - {id: bruno, name: Bruno, email: bruno@example.com, aliases: [b.silva], devices: [{channel: fcm, token: fcm-bruno}]}
  - {id: dana, name: Dana, email: dana@example.com, devices: [{channel: fcm, token: fcm-dana}]}
  - {id: emil, name: Emil, email: emil@example.com, devices: [{channel: fcm, token: fcm-emil}]}
  - {id: chen, name: Chen, email: chen@example.com, devices: [{channel: fcm, token: fcm-chen}]}
  - {id: fatima, name: Fatima, email: fatima@example.com, devices: [{channel: fcm, token: fcm-fatima}]}
teams:
  - {id: approvers, members: [dana, emil]}
  - {id: support, members: [chen]}
resources:
  - {kind: artifact, name: orders-api, owners: ["person:fatima"]}
routes:
  - {id: failures, match: {types: ["flow.*"]}, recipients: [{team: support}]}
  - {id: approvals, match: {types: ["approval.requested"]}, recipients: [{team: approvers}]}
  - {id: answers, match: {types: ["response.*"]}, recipients: [{requester: true}, {team: support}]}
"""


@pytest.fixture
def pipeline(workers: Workers, tmp_path: Path) -> Workers:
    spec = tmp_path / "directory.yaml"
    spec.write_text(DIRECTORY)
    with db.session() as s:
        directory.apply(directory.load(spec), s)
        s.add(WebhookEndpoint(id="admin", environment="prod", url="https://admin.example/hooks",
                              secret_ref="env:ADMIN_WEBHOOK_SECRET", kinds=["incident.*", "approval.*"]))
    workers.start("all", concurrency=4, kind="threads")
    return workers


def answers_key(environment: str = "prod") -> str:
    with db.session() as s:
        _, key = keys.create(s, environment=environment, scope="answers", label="tests")
    return key


def notified(event_id: uuid.UUID | None) -> set[str]:
    return {r.person_id for r in rows(select(Notification.person_id).where(Notification.event_id == event_id))}


def told_by(answer_id: int) -> uuid.UUID:
    """The response event an applied answer published, once the pipeline is done with it."""
    [(event_id,)] = rows(select(Answer.event_id).where(Answer.id == answer_id))
    wait_until(lambda: all_done([event_id]), message="the response event through the pipeline")
    return event_id


def refusal(action: str, key: str, person: str, **subject: int) -> tuple[int, str]:
    with pytest.raises(AnswerRefused) as refused:
        respond(action, key=key, on_behalf_of=person, **subject)  # type: ignore[arg-type]
    return refused.value.status, refused.value.reason


def requested(quorum: int = 2, expires_in: timedelta = timedelta(hours=4)) -> Approval:
    request = publish(approval_requested(request_kind="api", target="orders-api", requester="bruno", quorum=quorum,
                                         expires_at=datetime.now(UTC) + expires_in, environment="prod"))
    wait_until(lambda: all_done([request]), message="the approval request delivered")
    assert notified(request) == {"dana", "emil"}  # never the requester
    with db.session() as s:
        return s.scalars(select(Approval).where(Approval.event_id == request)).one()


def dev_lines(token: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, Path(TEST_ENV["HERALD_DEV_OUTPUT"]).read_text().splitlines())
            if line["to"] == token]


def test_forged_votes_through_the_producer_door_are_refused_and_audited(pipeline: Workers) -> None:
    approval = requested(quorum=2)
    key = answers_key()
    subject = {"approval_id": approval.id}
    # the requester under other spellings, someone not asked, someone nobody knows
    assert refusal("approve", key, "BRUNO", **subject) == (403, "the requester cannot answer their own approval")
    assert refusal("approve", key, "bruno@example.com", **subject)[0] == 403
    assert refusal("approve", key, "fatima", **subject) == (
        403, f"fatima was not asked to approve approval {approval.id}")
    assert refusal("approve", key, "mallory", **subject) == (403, "mallory is not in the directory")
    # emil and Emil are one person: one vote
    assert respond("approve", key=key, on_behalf_of="emil", approval_id=approval.id).applied
    assert refusal("approve", key, "Emil", **subject)[0] == 409
    assert rows(select(Approval.status)) == [("pending",)]
    assert rows(select(ApprovalVote.person_id, ApprovalVote.decision)) == [("emil", "approve")]
    # every refusal is an audit row with its reason, the key and the person as named; never a dead letter
    audit = rows(select(AuditLog.actor, AuditLog.action, AuditLog.details)
                 .where(AuditLog.action == "approval.approve.refused").order_by(AuditLog.id))
    assert [a.actor for a in audit] == ["bruno", "bruno", "fatima", "mallory", "emil"]
    assert all(a.details["via"] == "producer" and a.details["key_id"] and a.details["on_behalf_of"] for a in audit)
    assert rows(select(DeadLetter.id)) == []


def test_a_dev_key_cannot_acknowledge_a_prod_incident(pipeline: Workers) -> None:
    failure = publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502"))
    wait_until(lambda: all_done([failure]))
    [(incident_id,)] = rows(select(Incident.id))
    dev = answers_key("dev")
    assert refusal("acknowledge", dev, "mallory", incident_id=incident_id) == (
        404, f"incident {incident_id} does not exist in dev")
    assert refusal("acknowledge", dev, "chen", incident_id=incident_id)[0] == 404
    # still open, still escalating
    assert rows(select(Incident.status, Incident.assignee)) == [("open", None)]
    assert rows(select(DueWork.state)) == [("due",)]
    # a key of another scope, or no key herald knows, opens no door at all
    with db.session() as s:
        _, publishing = keys.create(s, environment="prod", scope="publish")
    for key, status in [(publishing, 403), ("hk_0000000000000000_" + "x" * 40, 401)]:
        with pytest.raises(keys.KeyRefused) as refused:
            respond("acknowledge", key=key, on_behalf_of="chen", incident_id=incident_id)
        assert refused.value.status == status
    assert rows(select(Incident.status)) == [("open",)]


def test_a_recovery_of_another_flow_carrying_the_dedup_key_closes_nothing(pipeline: Workers) -> None:
    failure = publish(flow_failed("orders-to-erp", environment="prod", dedup_key="erp-outage"))
    other = publish(flow_recovered("invoices-to-bank", environment="prod", dedup_key="erp-outage"))
    wait_until(lambda: all_done([failure, other]))
    dev = publish(flow_recovered("orders-to-erp", environment="dev", dedup_key="erp-outage"))
    wait_until(lambda: all_done([dev]))
    assert rows(select(Incident.status)) == [("open",)]
    own = publish(flow_recovered("orders-to-erp", environment="prod", dedup_key="erp-outage"))
    wait_until(lambda: all_done([own]))
    assert rows(select(Incident.status)) == [("resolved",)]


def test_a_forged_ingest_task_changes_nothing(pipeline: Workers) -> None:
    failure = publish(flow_failed("orders-to-erp", environment="prod"))
    wait_until(lambda: all_done([failure]))
    [(incident_id,)] = rows(select(Incident.id))
    # as anyone with Flower's login could: send herald.ingest a response event
    forged = make_event("response.acknowledged", {"responder": "chen", "incident_id": incident_id},
                        environment="prod", source="flower")
    app.send_task("herald.ingest", args=[forged.to_json()], queue="ingest")
    wait_until(lambda: rows(select(EventRow.status).where(EventRow.id == forged.id)) == [("refused",)],
               message="the forged answer refused")
    assert rows(select(Incident.status, Incident.assignee)) == [("open", None)]
    assert rows(select(DueWork.state)) == [("due",)]
    [(reason,)] = rows(select(AuditLog.details["reason"]).where(AuditLog.action == "response.acknowledged.refused"))
    assert "answers come only through a door" in reason
    assert rows(select(DeadLetter.id)) == [] and notified(forged.id) == set()


def test_the_requester_hears_the_decision_not_each_vote_and_nobody_their_own_answer(pipeline: Workers) -> None:
    approval = requested(quorum=2)
    key = answers_key()
    first = told_by(respond("approve", key=key, on_behalf_of="dana", approval_id=approval.id).answer_id)
    # one vote of two: the requester is not told, nor dana herself (chen is, by the answers route)
    assert notified(first) == {"chen"}
    second = told_by(respond("approve", key=key, on_behalf_of="emil", approval_id=approval.id).answer_id)
    # the decision: the requester hears it, dana's request is replaced, emil gets no echo of his vote
    assert notified(second) == {"bruno", "dana", "chen"}
    [request, replaced] = [line for line in dev_lines("fcm-dana") if "approv" in line["title"]][-2:]
    assert replaced["title"] == "[prod] approved (2 of 2): orders-api"
    assert replaced["collapse_key"] == request["collapse_key"] == f"approval:{approval.id}"
    assert [m.kind for m in rows(select(WebhookMessage.kind))] == ["approval.approved"]


def test_an_acknowledgement_replaces_the_others_page(pipeline: Workers) -> None:
    failure = publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502"))
    wait_until(lambda: all_done([failure]))
    [(incident_id,)] = rows(select(Incident.id))
    with db.session() as s:  # bruno was paged too (the second step of a chain, say)
        s.add(Notification(event_id=failure, person_id="bruno", route="r", reason="test", status="no_devices"))
    told = told_by(respond("acknowledge", key=answers_key(), on_behalf_of="chen", incident_id=incident_id).answer_id)
    assert notified(told) == {"bruno"}  # not chen: no echo
    [page] = [line for line in dev_lines("fcm-chen") if "managed flow failed" in line["title"]]
    [replacement] = [line for line in dev_lines("fcm-bruno") if "acknowledged" in line["title"]]
    assert replacement["title"] == "[prod] acknowledged by Chen: orders-to-erp (managed flow failed)"
    assert replacement["collapse_key"] == page["collapse_key"]
    assert [m.kind for m in rows(select(WebhookMessage.kind))] == ["incident.acknowledged"]


def test_an_expired_approval_is_closed_by_the_sweep_written_back_and_told(pipeline: Workers) -> None:
    approval = requested(quorum=2, expires_in=timedelta(minutes=5))
    respond("approve", key=answers_key(), on_behalf_of="dana", approval_id=approval.id)
    # when the sweep runs past the expiry (its clock passed in)
    assert sweep_approvals(now=datetime.now(UTC) + timedelta(minutes=6)) == {"expired": 1}
    # then it failed closed, was written back, and the requester and the approvers are told
    assert rows(select(Approval.status)) == [("expired",)]
    assert [m.kind for m in rows(select(WebhookMessage.kind))] == ["approval.expired"]
    wait_until(lambda: rows(select(EventRow.id).where(EventRow.type == "approval.expired")) != [])
    [(expired,)] = rows(select(EventRow.id).where(EventRow.type == "approval.expired"))
    wait_until(lambda: all_done([expired]))
    assert notified(expired) == {"bruno", "dana", "emil"}
    [line] = [line for line in dev_lines("fcm-bruno") if "expired" in line["title"]]
    assert line["title"] == "[prod] approval expired: orders-api"
    assert line["body"].endswith("without a decision (1 of 2 approvals): nothing was approved")
    assert sweep_approvals(now=datetime.now(UTC) + timedelta(minutes=7)) == {"expired": 0}
