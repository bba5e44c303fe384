"""What a person sees on a lock screen: each flow's title and body, cleaned, and cut only as needed.

Unit tests: rendering and encoding need no service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from herald.channels.apns import provider as apns
from herald.channels.fcm import provider as fcm
from herald.channels.types import Message, Payload, Target
from herald.channels.webpush import provider as webpush
from herald.events import EVENT_TYPES, Event, make_event
from herald.payload import MAX_PAYLOAD_BYTES, clean_body, clean_title, cut, fit, render
from producers.helpers import (
    approval_requested,
    artifact_event,
    business_event,
    credential_expiring,
    flow_event,
    ops_event,
)

EXPIRES = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def text(event: Event, enrichment: dict[str, Any] | None = None) -> tuple[str, str]:
    title, body, _, _ = render(event_id=str(event.id), event_type=event.type, flow=event.flow,
                               environment=event.environment, severity=event.effective_severity().value,
                               data=event.data, notification_id=7, ids_only=False, enrichment=enrichment)
    return title, body


# --- 6. each flow's text, as a person on call reads it ------------------------------------------

@pytest.mark.parametrize(("event", "title", "body"), [
    (artifact_event("deployed", "orders-api", kind="api", environment="test", version="2.4", actor="fatima"),
     "[test] artifact deployed: orders-api", "API version 2.4 deployed by fatima"),
    (artifact_event("updated", "edi-850-to-json", kind="mapping", environment="dev", version="v7"),
     "[dev] artifact updated: edi-850-to-json", "Mapping v7 updated"),
    (artifact_event("retired", "orders-topic", kind="messaging", environment="test", actor="chen"),
     "[test] artifact retired: orders-topic", "Messaging artifact retired by chen"),
], ids=["deployed", "updated-no-actor", "retired-no-version"])
def test_artifact_text_says_kind_version_and_who(event: Event, title: str, body: str) -> None:
    assert text(event) == (title, body)


@pytest.mark.parametrize(("event", "title", "body"), [
    (flow_event("failed", "orders-to-erp", environment="prod", error="HTTP 502 from ERP gateway", attempts=3),
     "[prod] managed flow failed: orders-to-erp", "HTTP 502 from ERP gateway (after 3 attempts)"),
    (flow_event("failed", "orders-to-erp", environment="prod"),
     "[prod] managed flow failed: orders-to-erp", "No error message was given"),
    (flow_event("retry_exhausted", "orders-to-erp", environment="prod", error="HTTP 503", attempts=1),
     "[prod] flow exceeded its retry threshold: orders-to-erp", "Gave up after 1 attempt: HTTP 503"),
    (flow_event("credential_error", "invoices-out", environment="prod", credential="erp-client-cert",
                error="401 Unauthorized"),
     "[prod] flow hit a credential error: invoices-out", "Credential erp-client-cert was refused: 401 Unauthorized"),
    (flow_event("recovered", "orders-to-erp", environment="prod"),
     "[prod] flow recovered: orders-to-erp", "Running normally again"),
], ids=["failed", "failed-no-error", "retry-exhausted", "credential-error", "recovered"])
def test_flow_failure_text_says_what_broke(event: Event, title: str, body: str) -> None:
    assert text(event) == (title, body)


def test_an_escalation_says_nobody_acknowledged_and_the_level() -> None:
    event = flow_event("escalated", "orders-to-erp", environment="prod", severity="critical",
                       error="orders-to-erp: flow.failed: unacknowledged, escalated to level 2")
    event = event.model_copy(update={"data": {**event.data, "incident_id": 12, "level": 2}})  # as herald/timers.py
    assert text(event) == ("[prod] incident still unacknowledged: orders-to-erp",
                           "Nobody has acknowledged incident #12: escalated to level 2")


@pytest.mark.parametrize(("event", "body"), [
    (approval_requested(request_kind="api", target="orders-api", requester="fatima", quorum=2,
                        expires_at=EXPIRES, environment="prod", summary="Expose orders to partners"),
     "fatima asks you to approve a new API: Expose orders to partners. 2 approvals needed. "
     "Expires 1 Dec 12:00 UTC"),
    (approval_requested(request_kind="environment_change", target="prod-eu", requester="alice",
                        expires_at=datetime(2026, 3, 9, 8, 5, tzinfo=UTC), environment="prod",
                        summary="Raise the EDI timeout to 60 s."),
     "alice asks you to approve an environment change: Raise the EDI timeout to 60 s. Expires 9 Mar 08:05 UTC"),
    (approval_requested(request_kind="credential_set", target="erp-client", requester="bruno",
                        expires_at=EXPIRES, environment="prod"),
     "bruno asks you to approve a credential set. Expires 1 Dec 12:00 UTC"),
], ids=["api-quorum-2", "environment-change", "credential-set-no-summary"])
def test_approval_text_names_the_request_quorum_and_expiry(event: Event, body: str) -> None:
    title, got = text(event)
    assert title == f"[prod] approval requested: {event.data['target']}"
    assert got == body


def test_an_approval_expiry_in_another_zone_is_shown_in_utc() -> None:
    event = approval_requested(request_kind="api", target="orders-api", requester="fatima", environment="prod",
                               expires_at=datetime.fromisoformat("2026-12-01T09:30:00-05:00"))
    assert text(event)[1].endswith("Expires 1 Dec 14:30 UTC")


@pytest.mark.parametrize(("event", "title", "body"), [
    (business_event("order_submitted", topic="orders.eu", reference="PO-1", environment="prod",
                    summary="Order PO-1 from ACME, 12 lines"),
     "[prod] order submitted: PO-1", "Order PO-1 from ACME, 12 lines"),
    (business_event("shipment_status", topic="shipments", reference="SHP-9", environment="prod",
                    status="Out for delivery", partner="DHL"),
     "[prod] shipment status: SHP-9", "Out for delivery (DHL)"),
    (business_event("partner_onboarding", topic="partners", reference="GLOBEX", environment="prod",
                    status="AS2 certificates exchanged", partner="GLOBEX"),
     "[prod] partner onboarding milestone: GLOBEX", "AS2 certificates exchanged"),
    (business_event("invoice_posted", topic="invoices", reference="INV-42", environment="prod"),
     "[prod] invoice posted: INV-42", "Open to see the details"),
], ids=["summary", "status-partner", "partner-is-reference", "nothing-more"])
def test_business_text(event: Event, title: str, body: str) -> None:
    assert text(event) == (title, body)


@pytest.mark.parametrize(("days_left", "expired", "body"), [
    (3, False, "Certificate expires in 3 days, on 1 Dec 2026, 12:00 UTC"),
    (1, False, "Certificate expires in 1 day, on 1 Dec 2026, 12:00 UTC"),
    (0, False, "Certificate expires today, 1 Dec 2026, 12:00 UTC"),
    (None, False, "Certificate expires on 1 Dec 2026, 12:00 UTC"),
    (None, True, "Certificate expired on 1 Dec 2026, 12:00 UTC"),
])
def test_credential_text_says_when(days_left: int | None, expired: bool, body: str) -> None:
    event = credential_expiring("erp-client-cert", kind="certificate", expires_at=EXPIRES, days_left=days_left,
                                expired=expired, environment="prod")
    assert text(event) == (f"[prod] credential {'expired' if expired else 'expiring'}: erp-client-cert", body)


def test_other_credential_kinds_read_as_words() -> None:
    event = credential_expiring("partner-key", kind="api_key", expires_at=EXPIRES, days_left=10, environment="test")
    assert text(event)[1] == "API key expires in 10 days, on 1 Dec 2026, 12:00 UTC"


@pytest.mark.parametrize(("event", "title", "body"), [
    (ops_event("queue_backlog", "edi-inbound", environment="prod", metric="depth", value=4210.0, threshold=1000.0),
     "[prod] queue backlog: edi-inbound", "4,210 messages waiting (threshold 1,000)"),
    (ops_event("queue_backlog", "edi-inbound", environment="prod", metric="depth", value=800, threshold=1000,
               cleared=True),
     "[prod] queue backlog cleared: edi-inbound", "Back to normal: 800 messages waiting (threshold 1,000)"),
    (ops_event("processing_delayed", "herald.deliver.fcm", environment="prod", metric="oldest_message_age_s",
               value=425.4, threshold=300.0),
     "[prod] processing delayed: herald.deliver.fcm", "Oldest message waiting 7 min 5 s (threshold 5 min)"),
    (ops_event("sla_breached", "orders-to-erp", environment="prod", metric="events_pending_past_sla", value=1.0,
               threshold=1.0),
     "[prod] SLA breached: orders-to-erp", "1 event past their SLA"),
    (ops_event("sla_breached", "edi-inbound", environment="prod", metric="minutes to first delivery", value=42,
               threshold=15),
     "[prod] SLA breached: edi-inbound", "Minutes to first delivery 42 (threshold 15)"),
    (ops_event("processing_delayed", "edi-inbound", environment="prod", metric="lag_ratio", value=1.2345,
               threshold=1),
     "[prod] processing delayed: edi-inbound", "Lag ratio 1.23 (threshold 1)"),
], ids=["backlog", "backlog-cleared", "delayed-age", "sla-pending", "free-metric", "fraction"])
def test_operations_text_reads_numbers_as_people_do(event: Event, title: str, body: str) -> None:
    assert text(event) == (title, body)


def test_an_unreadable_credential_file_says_why() -> None:
    event = ops_event("credential_unreadable", "/etc/herald/creds/erp.pem", environment="prod",
                      metric="credential_file_unreadable")
    event = event.model_copy(update={"data": {**event.data, "reason": "not a PEM certificate"}})
    assert text(event) == ("[prod] credential file unreadable: /etc/herald/creds/erp.pem", "not a PEM certificate")


def answered(change: str, environment: str = "prod", **data: Any) -> Event:
    """The response event a door publishes for an applied answer (herald/answers.py)."""
    return make_event(f"response.{change}", data, environment=environment, source="herald/answers")


@pytest.mark.parametrize(("event", "enrichment", "title", "body"), [
    (answered("acknowledged", responder="chen", responder_name="Chen", incident_id=12, comment="on it",
              assignee="chen"),
     {"incident": {"id": 12, "title": "orders-to-erp: flow.failed"}},
     "[prod] acknowledged by Chen: orders-to-erp (managed flow failed)", "Assigned to chen. \u201con it\u201d"),
    (answered("resolved", responder="bruno", incident_id=12),
     {"incident": {"id": 12, "title": "credential erp-client-cert expired"}},
     "[prod] resolved by bruno: credential erp-client-cert expired", "Incident #12"),
    (answered("approved", responder="dana", responder_name="Dana", approval_id=3, status="approved", approvals=2,
              quorum=2),
     {"approval": {"id": 3, "target": "orders-api"}},
     "[prod] approved (2 of 2): orders-api", "Approval #3"),
    (answered("approved", responder="dana", responder_name="Dana", approval_id=3, status="pending", approvals=1,
              quorum=2),
     {"approval": {"id": 3, "target": "orders-api"}},
     "[prod] approved by Dana (1 of 2): orders-api", "Approval #3"),
    (answered("info_requested", responder="dana", approval_id=3, comment="Which partners?"),
     None, "[prod] more information requested by dana: approval #3", "\u201cWhich partners?\u201d"),
    (answered("follow_up_requested", environment="test", responder="emil", incident_id=4),
     None, "[test] follow-up requested by emil: incident #4", "Incident #4"),
], ids=["acknowledged", "resolved", "approved-decided", "approved-one-vote", "info-requested-unknown-approval",
        "follow-up"])
def test_response_text_says_who_did_what_to_which(event: Event, enrichment: dict[str, Any] | None, title: str,
                                                  body: str) -> None:
    assert text(event, enrichment) == (title, body)


def test_ids_only_routes_keep_everything_but_ids_on_the_server() -> None:
    event = business_event("order_submitted", topic="orders.eu", reference="PO-1", environment="prod",
                           summary="secret customer details")
    title, body, link, data = render(event_id=str(event.id), event_type=event.type, flow=event.flow,
                                     environment="prod", severity="info", data=event.data, notification_id=7,
                                     ids_only=True)
    assert (title, body) == ("You have a new notification", "Order submitted")
    assert link == f"herald://events/{event.id}?notification=7"
    assert data == {"event_id": str(event.id), "notification_id": "7", "type": "business.order_submitted"}


# --- 3. control, escape and bidi characters never reach a phone ---------------------------------

def test_a_title_is_one_line_of_visible_text() -> None:
    assert clean_title("\x1b[31mRED\x1b[0m alert\n\tnext\u202egnp.exe\u2066x\u2069 \x1b]0;title\x07done\x00\x7f") == \
        "RED alert nextgnp.exex done"


def test_a_body_keeps_its_line_breaks_and_loses_the_rest() -> None:
    assert clean_body("line 1\r\nline 2\rline 3\u2028\n\n\n\nline 4\twith tab\x1b[2J\u200f\ufeff\x85") == \
        "line 1\nline 2\nline 3\n\nline 4 with tab"


def test_emoji_sequences_and_accents_survive_cleaning() -> None:
    family, flag, accent = "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f1e9\U0001f1ea", "e\u0301"
    assert clean_title(f"{family} {flag} caf{accent}") == f"{family} {flag} caf{accent}"


def test_hostile_event_text_reaches_no_provider_payload() -> None:
    event = flow_event("failed", "orders\u202e-to-erp", environment="prod",
                       error="HTTP 502\n\x1b[8mhidden\x1b[0m \u2067reversed\u2069")
    title, body = text(event)
    assert (title, body) == ("[prod] managed flow failed: orders-to-erp", "HTTP 502\nhidden reversed")
    msg = message(title, body)
    for encoded in (fcm.encode(msg), apns.encode(msg), webpush.cleartext(msg)):
        decoded = encoded.decode()
        assert not any(c in decoded for c in "\x1b\u202e\u2067\u2069")


# --- 5. cut only as much as the provider needs, at a boundary, with an ellipsis -----------------

def message(title: str, body: str) -> Message:
    target = Target(1, 1, "t" * 152, "token", "com.example.admin", "production", 1)
    return Message(target, Payload(title, body, "herald://events/e?notification=7",
                                   {"event_id": "4f1c7e0a-5a4e-4a53-9f0e-0d2b1f6f1b9c", "notification_id": "7",
                                    "type": "flow.failed", "severity": "error"}),
                   "error", "flow:orders-to-erp:prod", 3600)


def body_of(channel: str, encoded: bytes) -> str:
    doc = json.loads(encoded)
    return {"fcm": lambda: doc["message"]["notification"]["body"], "apns": lambda: doc["aps"]["alert"]["body"],
            "webpush": lambda: doc["body"]}[channel]()


ENCODERS: dict[str, tuple[Callable[[Message], bytes], int]] = {
    "fcm": (fcm.encode, MAX_PAYLOAD_BYTES), "apns": (apns.encode, MAX_PAYLOAD_BYTES),
    "webpush": (webpush.cleartext, webpush.MAX_CLEARTEXT_BYTES)}


@pytest.mark.parametrize("channel", ENCODERS)
@pytest.mark.parametrize("unit", ["\U0001f600", "\u00e9", "\u4e2d", "a"])
def test_a_long_non_ascii_body_keeps_all_that_fits_in_utf8(channel: str, unit: str) -> None:
    encode, limit = ENCODERS[channel]
    original = unit * 2000
    encoded = encode(message("[prod] managed flow failed: orders-to-erp", original))
    body = body_of(channel, encoded)
    assert len(encoded) <= limit
    if len(unit.encode()) == 1:  # 2,000 ASCII characters fit whole
        assert body == original
        return
    # cut with an ellipsis, and one more character would not have fitted
    assert body.endswith("\u2026") and body[:-1] == unit * (len(body) - 1)
    longer = encode(message("[prod] managed flow failed: orders-to-erp", unit * len(body) + "\u2026"))
    assert len(longer) > limit or body_of(channel, longer) != unit * len(body) + "\u2026"
    # what is left after the fixed part is used, counted in UTF-8 (not in "\\ud83d\\ude00" escapes)
    assert unit.encode() in encoded
    room = limit - len(encode(message("[prod] managed flow failed: orders-to-erp", "")))
    assert len(body) - 1 == (room - len("\u2026".encode())) // len(unit.encode())


def test_a_1000_emoji_body_keeps_over_850_on_every_channel() -> None:
    # a page's FCM message also carries its Android notification (channel, tag, priority, sound) in the 4 KB
    kept = {name: len(body_of(name, encode(message("title", "\U0001f600" * 1000))))
            for name, (encode, _) in ENCODERS.items()}
    assert all(n > 850 for n in kept.values()), kept


def test_a_cut_never_splits_an_emoji_sequence_a_flag_or_an_accent() -> None:
    family, flag, accent = "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f1e9\U0001f1ea", "e\u0301"
    for unit in (family, flag, accent, "\U0001f44d\U0001f3fd"):
        for limit in range(40, 80):
            def encode(title: str, body: str) -> bytes:
                return json.dumps({"t": title, "b": body}, ensure_ascii=False).encode()

            body = json.loads(fit(encode, "t", unit * 30, limit))["b"]
            if body:
                assert body.endswith("\u2026") and body[:-1] == unit * ((len(body) - 1) // len(unit)), (unit, limit)


def test_render_cuts_long_text_with_an_ellipsis() -> None:
    event = flow_event("failed", "x" * 255, environment="prod", error="word " * 800)
    title, body = text(event)
    assert len(title) == 200 and title.endswith("x\u2026")
    assert len(body) <= 1000 and body.endswith("word\u2026")
    assert cut("short", 10) == "short" and cut("abcdef", 4) == "abc\u2026"


def test_trimming_costs_a_few_encodings_not_a_search() -> None:
    calls = 0

    def encode(title: str, body: str) -> bytes:
        nonlocal calls
        calls += 1
        return json.dumps({"t": title, "b": body, "x": "y" * 200}, ensure_ascii=False).encode()

    fit(encode, "title", "\U0001f600" * 5000)
    assert calls <= 3  # the full payload, the empty body, the longest cut


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@pytest.mark.parametrize("data", [{}, {"value": "n/a", "threshold": float("nan"), "expires_at": "soon", "attempts": "x",
                                       "days_left": "?", "level": None, "quorum": 0, "kind": 7, "version": 2}])
def test_odd_or_missing_data_never_breaks_a_batch(event_type: str, data: dict[str, Any]) -> None:
    # render runs in the deliver worker for each target: stored data that skipped validation must not raise
    title, body, _, _ = render(event_id="e", event_type=event_type, flow=EVENT_TYPES[event_type].flow,
                               environment="prod", severity="info", data=data, notification_id=1, ids_only=False)
    assert title.startswith("[prod] ") and body
