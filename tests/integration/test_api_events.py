"""POST /v1/events: CloudEvents in structured, binary and batch mode, behind an API key of one environment."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from herald import db
from herald.models import EventRow, Outbox
from tests.integration.apiclient import api_client, bearer, make_key
from tests.integration.conftest import Workers, wait_until

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}


@pytest.fixture
def client(clean: None) -> Iterator[TestClient]:
    yield from api_client()


def cloudevent(environment: str = "dev", **overrides: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "urn:test", "type": "flow.failed",
            "environment": environment, "data": {"flow": "orders", "error": "timeout"}, **overrides}


def stored() -> dict[str, dict[str, Any]]:
    """What was accepted: the outbox row each published event has (HERALD_DATABASE_URL is set)."""
    with db.session() as s:
        return {str(row.id): row.envelope for row in s.scalars(select(Outbox))}


def post(client: TestClient, body: Any, key: str, headers: dict[str, str] = STRUCTURED) -> Any:
    return client.post("/v1/events", content=json.dumps(body), headers={**headers, **bearer(key)})


def test_structured_mode_is_accepted_with_the_extensions_as_envelope_fields(client: TestClient) -> None:
    event = cloudevent(severity="critical", idempotencykey="orders-1", subject="orders")
    answer = post(client, event, make_key("dev", "publish"))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"ids": [event["id"]]}
    envelope = stored()[event["id"]]
    assert (envelope["environment"], envelope["severity"], envelope["idempotency_key"], envelope["subject"]) == \
        ("dev", "critical", "orders-1", "orders")


def test_binary_mode_takes_the_attributes_from_ce_headers(client: TestClient) -> None:
    event_id = str(uuid.uuid4())
    headers = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": event_id,
               "ce-source": "urn:test", "ce-type": "flow.failed", "ce-environment": "dev",
               "ce-idempotencykey": "orders%202", **bearer(make_key("dev", "publish"))}
    answer = client.post("/v1/events", content=json.dumps({"flow": "orders"}), headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"ids": [event_id]}
    assert stored()[event_id]["idempotency_key"] == "orders 2"  # percent-decoded, as the HTTP binding says


def test_a_batch_is_accepted_whole(client: TestClient) -> None:
    events = [cloudevent(), cloudevent(type="artifact.deployed", data={"artifact": "a", "kind": "api"})]
    answer = post(client, events, make_key("dev", "publish"), BATCH)
    assert answer.status_code == 202, answer.text
    assert answer.json()["ids"] == [e["id"] for e in events]
    assert set(stored()) == {e["id"] for e in events}


def test_a_batch_with_one_invalid_event_is_refused_whole_with_a_reason_per_event(client: TestClient) -> None:
    events = [cloudevent(), cloudevent(type="flow.nonsense"), cloudevent(data={})]
    answer = post(client, events, make_key("dev", "publish"), BATCH)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid batch" and "none was published" in body["reason"]
    assert [item["index"] for item in body["items"]] == [1, 2]
    assert "unknown event type" in body["items"][0]["reason"]
    assert "data.flow" in body["items"][1]["reason"]
    assert stored() == {}


@pytest.mark.parametrize("body, reason", [
    (cloudevent(type="flow.nonsense"), "unknown event type"),
    (cloudevent(environment="moon"), "unknown environment"),
    (cloudevent(specversion="0.3"), "specversion"),
    ({k: v for k, v in cloudevent().items() if k != "source"}, "source: required"),
    (cloudevent(id="not-a-uuid"), "id:"),
    (cloudevent(data={"flow": "x\u0000y"}), "NUL"),
    ([cloudevent()], "a JSON object"),
])
def test_an_invalid_event_is_refused_with_its_reason_and_nothing_is_stored(
        client: TestClient, body: Any, reason: str) -> None:
    answer = post(client, body, make_key("dev", "publish"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid event"
    assert reason in answer.json()["reason"]
    assert stored() == {}


def test_a_body_that_is_not_json_or_holds_nan_is_refused(client: TestClient) -> None:
    key = make_key("dev", "publish")
    valid = json.dumps(cloudevent())
    assert '"error": "timeout"' in valid
    # NaN, Infinity and 1e400 (infinity once parsed) are numbers Postgres' jsonb cannot hold
    unstorable = [valid.replace('"error": "timeout"', f'"error": "timeout", "value": {number}').encode()
                  for number in ("NaN", "Infinity", "1e400")]
    for raw in (b"{not json", b"\xff\xfe", *unstorable):
        answer = client.post("/v1/events", content=raw, headers={**STRUCTURED, **bearer(key)})
        assert answer.status_code == 400, raw
    assert stored() == {}


def test_a_body_that_is_no_cloudevent_is_unsupported(client: TestClient) -> None:
    answer = client.post("/v1/events", content=b"hello", headers={"Content-Type": "text/plain",
                                                                  **bearer(make_key("dev", "publish"))})
    assert answer.status_code == 415
    assert "application/cloudevents+json" in answer.json()["reason"]


def test_a_dev_key_cannot_publish_to_prod(client: TestClient) -> None:
    key = make_key("dev", "publish")
    answer = post(client, cloudevent("prod"), key)
    assert answer.status_code == 403
    assert "'dev'" in answer.json()["reason"] and "'prod'" in answer.json()["reason"]
    batch = post(client, [cloudevent("dev"), cloudevent("prod")], key, BATCH)
    assert batch.status_code == 403 and [i["index"] for i in batch.json()["items"]] == [1]
    assert stored() == {}


def test_a_missing_malformed_unknown_or_revoked_key_is_401_and_never_echoed(client: TestClient) -> None:
    from herald import keys

    key = make_key("dev", "publish")
    with db.session() as s:
        keys.revoke(s, key.split("_")[1])
    unknown = "hk_0123456789abcdef_" + "A" * 43
    for headers in ({}, bearer("nonsense"), bearer(unknown), bearer(key), {"Authorization": "Basic abc"}):
        answer = client.post("/v1/events", content=json.dumps(cloudevent()), headers={**STRUCTURED, **headers})
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert set(answer.json()) == {"error", "reason"}
        assert key not in answer.text and unknown not in answer.text
    assert stored() == {}


def test_a_key_without_the_publish_scope_is_403(client: TestClient) -> None:
    answer = post(client, cloudevent(), make_key("dev", "read"))
    assert answer.status_code == 403
    assert "publish" in answer.json()["reason"]
    assert stored() == {}


def test_an_event_sent_twice_with_one_idempotency_key_is_stored_once(client: TestClient, workers: Workers) -> None:
    key = make_key("dev", "publish")
    first, second = cloudevent(idempotencykey="once"), cloudevent(idempotencykey="once")
    assert post(client, first, key).status_code == 202
    assert post(client, second, key, STRUCTURED).status_code == 202
    workers.start("ingest,urgent")  # a flow failure is a page: the urgent pool ingests it

    def ingested() -> bool:
        with db.session() as s:
            return s.scalar(select(func.count()).select_from(Outbox).where(Outbox.ingested_at.is_(None))) == 0

    wait_until(ingested, message="both events ingested")
    with db.session() as s:
        rows = s.scalars(select(EventRow).where(EventRow.idempotency_key == "once")).all()
    assert len(rows) == 1 and str(rows[0].id) in (first["id"], second["id"])
