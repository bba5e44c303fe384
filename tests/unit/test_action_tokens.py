"""Action tokens (herald/actions.py): signed, bound to notification, person and action, expiring, rotatable keys."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from herald import actions, approvals, incidents
from herald.actions import ActionKeysMissing, TokenRefused, mint, tokens_for, verify
from herald.channels.apns import provider as apns
from herald.channels.fcm import provider as fcm
from herald.channels.types import Message, Payload, Target
from herald.channels.webpush import provider as webpush
from herald.flows import FLOWS
from herald.models import Notification, Person, utcnow
from herald.payload import ELLIPSIS, MAX_BODY_CHARS, MAX_PAYLOAD_BYTES, MAX_TITLE_CHARS
from herald.settings import get_settings
from tests.unit.domain_helpers import memory_session, stored_event

K1 = "k1:" + "a" * 40
K2 = "k2:" + "b" * 40
IN_AN_HOUR = datetime.now(UTC) + timedelta(hours=1)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """HERALD_ACTION_KEYS set (the first signs); set it again and call ``reload`` to rotate."""
    monkeypatch.setenv("HERALD_ACTION_KEYS", K1)
    reload()
    yield monkeypatch
    monkeypatch.undo()
    reload()


def reload() -> None:
    get_settings.cache_clear()
    actions.keyring.clear()


def claims_of(token: str) -> list[object]:
    body = token.split(".")[1]
    decoded: list[object] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


def test_a_minted_token_verifies_with_its_claims(keys: pytest.MonkeyPatch) -> None:
    token = mint(42, "chen", "acknowledge", IN_AN_HOUR)
    claims = verify(token)
    assert (claims.notification_id, claims.person_id, claims.action, claims.key_id) == (42, "chen", "acknowledge", "k1")
    assert claims.expires_at == IN_AN_HOUR.replace(microsecond=0)
    assert claims.token_id == "42:acknowledge"


def test_every_copy_of_one_notifications_action_shares_its_token_id(keys: pytest.MonkeyPatch) -> None:
    first = verify(mint(42, "chen", "resolve", IN_AN_HOUR))
    later = verify(mint(42, "chen", "resolve", IN_AN_HOUR + timedelta(minutes=5)))
    other = verify(mint(42, "chen", "acknowledge", IN_AN_HOUR))
    assert first.token_id == later.token_id != other.token_id


@pytest.mark.parametrize("change", ["claims", "signature", "key id", "swapped claims"])
def test_an_altered_token_is_refused_as_forged(keys: pytest.MonkeyPatch, change: str) -> None:
    kid, claims, signature = mint(42, "chen", "acknowledge", IN_AN_HOUR).split(".")
    mallory = mint(42, "mallory", "acknowledge", IN_AN_HOUR).split(".")[1]
    altered = {"claims": f"{kid}.{claims[:-2]}{'A' if claims[-2] != 'A' else 'B'}{claims[-1]}.{signature}",
               "signature": f"{kid}.{claims}.{signature[::-1]}",
               "key id": f"k2.{claims}.{signature}",
               "swapped claims": f"{kid}.{mallory}.{signature}"}[change]
    with pytest.raises(TokenRefused) as refused:
        verify(altered)
    assert refused.value.status == 401


def test_a_token_signed_with_a_secret_herald_does_not_hold_is_refused(keys: pytest.MonkeyPatch) -> None:
    keys.setenv("HERALD_ACTION_KEYS", "k1:" + "z" * 40)  # same key id, another secret
    reload()
    forged = mint(42, "chen", "approve", IN_AN_HOUR)
    keys.setenv("HERALD_ACTION_KEYS", K1)
    reload()
    with pytest.raises(TokenRefused, match="forged or altered") as refused:
        verify(forged)
    assert refused.value.status == 401


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "k1.%%%.x", "x" * 5000])
def test_a_malformed_token_is_refused_with_400_or_401(keys: pytest.MonkeyPatch, token: str) -> None:
    with pytest.raises(TokenRefused) as refused:
        verify(token)
    assert refused.value.status in (400, 401)


def test_an_expired_token_is_refused_with_410(keys: pytest.MonkeyPatch) -> None:
    token = mint(42, "chen", "acknowledge", IN_AN_HOUR)
    assert verify(token, now=IN_AN_HOUR - timedelta(seconds=2)).action == "acknowledge"
    with pytest.raises(TokenRefused, match="expired") as refused:
        verify(token, now=IN_AN_HOUR + timedelta(seconds=1))
    assert refused.value.status == 410
    with pytest.raises(TokenRefused):
        verify(mint(42, "chen", "acknowledge", datetime.now(UTC) - timedelta(seconds=1)))


def test_a_token_of_an_unknown_key_id_is_refused(keys: pytest.MonkeyPatch) -> None:
    keys.setenv("HERALD_ACTION_KEYS", "other:" + "c" * 40)
    reload()
    token = mint(42, "chen", "acknowledge", IN_AN_HOUR)
    keys.setenv("HERALD_ACTION_KEYS", K1)
    reload()
    with pytest.raises(TokenRefused, match="unknown or removed key") as refused:
        verify(token)
    assert refused.value.status == 401


def test_rotation_old_tokens_verify_until_their_key_is_removed(keys: pytest.MonkeyPatch) -> None:
    old = mint(42, "chen", "acknowledge", IN_AN_HOUR)
    keys.setenv("HERALD_ACTION_KEYS", f"{K2},{K1}")  # k2 signs from now on, k1 still verifies
    reload()
    new = mint(43, "chen", "acknowledge", IN_AN_HOUR)
    assert (verify(old).key_id, verify(new).key_id) == ("k1", "k2")
    keys.setenv("HERALD_ACTION_KEYS", K2)  # k1 removed
    reload()
    assert verify(new).key_id == "k2"
    with pytest.raises(TokenRefused, match="unknown or removed key"):
        verify(old)


def test_a_keys_file_is_read_again_when_it_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# rotated monthly\nk1 " + "a" * 40 + "\n")
    monkeypatch.setenv("HERALD_ACTION_KEYS_FILE", str(path))
    monkeypatch.delenv("HERALD_ACTION_KEYS", raising=False)  # it would win over the file
    reload()
    try:
        old = mint(42, "chen", "resolve", IN_AN_HOUR)
        path.write_text("k2 " + "b" * 40 + "\nk1 " + "a" * 40 + "\n")
        assert verify(mint(43, "chen", "resolve", IN_AN_HOUR)).key_id == "k2"
        assert verify(old).key_id == "k1"
        path.write_text("k2 " + "b" * 40 + "\n")
        with pytest.raises(TokenRefused, match="unknown or removed key"):
            verify(old)
    finally:
        monkeypatch.undo()
        reload()


@pytest.mark.parametrize("value, problem", [
    ("k1:short", "at least 32"), ("k1" + "a" * 40, "kid:secret"), (f"{K1},{K1}", "twice"),
    ("bad.kid:" + "a" * 40, "key id"), (",", "no key")])
def test_a_weak_or_malformed_keyring_is_refused(keys: pytest.MonkeyPatch, value: str, problem: str) -> None:
    keys.setenv("HERALD_ACTION_KEYS", value)
    reload()
    with pytest.raises(ValueError, match=problem):
        mint(42, "chen", "acknowledge", IN_AN_HOUR)


def test_the_embedded_default_generates_a_private_keyring_once(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_DATA_DIR", str(tmp_path))
    for name in ("HERALD_ACTION_KEYS", "HERALD_ACTION_KEYS_FILE", "HERALD_DATABASE_URL", "HERALD_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    reload()
    try:
        token = mint(42, "chen", "acknowledge", IN_AN_HOUR)
        path = tmp_path / "action-keys"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        content = path.read_text()
        reload()  # another process on the same data folder
        assert verify(token).person_id == "chen"
        mint(43, "dana", "resolve", IN_AN_HOUR)
        assert path.read_text() == content
        assert [p.name for p in tmp_path.iterdir() if "action-keys" in p.name] == ["action-keys"]
    finally:
        monkeypatch.undo()
        reload()


def test_with_a_database_server_and_no_key_minting_refuses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HERALD_DATABASE_URL", "postgresql+psycopg://herald@db.invalid/herald")
    for name in ("HERALD_ACTION_KEYS", "HERALD_ACTION_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    reload()
    try:
        with pytest.raises(ActionKeysMissing, match="HERALD_ACTION_KEYS"):
            mint(42, "chen", "acknowledge", IN_AN_HOUR)
        with pytest.raises(TokenRefused) as refused:
            verify("k1.e30." + "A" * 43)
        assert refused.value.status == 401
        assert not os.path.exists(tmp_path / "action-keys")
    finally:
        monkeypatch.undo()
        reload()


def test_three_tokens_fit_easily_in_a_push(keys: pytest.MonkeyPatch) -> None:
    person = "p" * 64  # the longest person id the directory holds
    tokens = [mint(2**53, person, action, IN_AN_HOUR) for action in actions.ACTIONS["approval"]]
    assert all(len(t) <= 200 for t in tokens), [len(t) for t in tokens]
    assert sum(len(t) for t in tokens) <= 600
    assert claims_of(tokens[0]) == [2**53, person, "apr", int(IN_AN_HOUR.timestamp())]


def test_an_unknown_action_is_not_minted(keys: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown action"):
        mint(42, "chen", "delete_everything", IN_AN_HOUR)


# --- what a notification offers --------------------------------------------------------------------

@pytest.fixture
def s() -> Iterator[Session]:
    with memory_session() as session:
        yield session


def notified(s: Session, event_id: object, person: str) -> Notification:
    row = Notification(event_id=event_id, person_id=person, route="r", reason="test", created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def test_an_incident_page_offers_acknowledge_resolve_and_follow_up(keys: pytest.MonkeyPatch, s: Session) -> None:
    row = stored_event(s, "flow.failed", {"flow": "orders-inbound", "error": "timeout"})
    FLOWS["failure"].ingest(s, row)
    page = notified(s, row.id, "chen")
    tokens = tokens_for(s, page)
    assert list(tokens) == ["acknowledge", "resolve", "follow_up"]
    for action, token in tokens.items():
        claims = verify(token)
        assert (claims.notification_id, claims.person_id, claims.action) == (page.id, "chen", action)
        assert claims.expires_at == (page.created_at + timedelta(hours=24)).replace(microsecond=0)


def test_an_expired_credentials_incident_offers_the_same_answers(keys: pytest.MonkeyPatch, s: Session) -> None:
    # given the incident the credential sweep opens for an expired certificate, and its notice
    incident = incidents.open(s, "credential:prod:erp-client-cert", environment="prod",
                              title="erp-client-cert: credential.expired", severity="critical", actor="herald")
    row = stored_event(s, "credential.expired", {"credential": "erp-client-cert", "kind": "certificate",
                                                  "expires_at": "2026-12-01T00:00:00+00:00",
                                                  "incident_id": incident.id})
    FLOWS["credential"].ingest(s, row)
    # then its owner can acknowledge it, mark it resolved (rotated) or ask for a follow-up from the push
    assert list(tokens_for(s, notified(s, row.id, "chen"))) == ["acknowledge", "resolve", "follow_up"]
    # and once resolved, a later notice offers nothing
    incidents.resolve(s, incident)
    assert tokens_for(s, notified(s, row.id, "bruno")) == {}
    # while a credential notice with no incident (a threshold crossed) offers nothing either
    notice = stored_event(s, "credential.expiring", {"credential": "erp-client-cert", "kind": "certificate",
                                                     "expires_at": "2026-12-20T00:00:00+00:00", "days_left": 18})
    FLOWS["credential"].ingest(s, notice)
    assert tokens_for(s, notified(s, notice.id, "chen")) == {}


def test_a_resolved_incident_and_a_plain_event_offer_nothing(keys: pytest.MonkeyPatch, s: Session) -> None:
    failed = stored_event(s, "flow.failed", {"flow": "orders-inbound"})
    FLOWS["failure"].ingest(s, failed)
    recovered = stored_event(s, "flow.recovered", {"flow": "orders-inbound"})
    FLOWS["failure"].ingest(s, recovered)
    deployed = stored_event(s, "artifact.deployed", {"artifact": "orders-api", "kind": "api"})
    assert tokens_for(s, notified(s, failed.id, "chen")) == {}
    assert tokens_for(s, notified(s, deployed.id, "chen")) == {}


def test_an_approval_request_offers_votes_until_it_expires_but_not_to_the_requester(
        keys: pytest.MonkeyPatch, s: Session) -> None:
    s.add(Person(id="bruno", name="Bruno", email="bruno@example.com", aliases=["b.costa"]))
    expires = (utcnow() + timedelta(hours=4)).replace(microsecond=0)
    row = stored_event(s, "approval.requested", {
        "request_kind": "credential_set", "target": "orders-api", "requester": "BRUNO@example.com",
        "expires_at": expires.isoformat()})
    approval = approvals.request(s, row.id, row.data)
    tokens = tokens_for(s, notified(s, row.id, "dana"))
    assert list(tokens) == ["approve", "reject", "request_info"]
    assert {verify(t).expires_at for t in tokens.values()} == {expires}
    assert tokens_for(s, notified(s, row.id, "bruno")) == {}  # the requester, by email in another case
    approval.status = "approved"
    assert tokens_for(s, notified(s, row.id, "emil")) == {}


# --- in a push: within 4 KB whatever the text ------------------------------------------------------

@pytest.mark.parametrize("channel", ["fcm", "apns", "webpush"])
def test_three_tokens_and_the_longest_text_stay_within_each_providers_limit(keys: pytest.MonkeyPatch,
                                                                           channel: str) -> None:
    tokens = {action: mint(2**40, "p" * 64, action, IN_AN_HOUR) for action in actions.ACTIONS["incident"]}
    payload = Payload("\U0001f525" * MAX_TITLE_CHARS, "\U0001f600" * MAX_BODY_CHARS, "herald://events/e?notification=7",
                      {"event_id": "4f1c7e0a-5a4e-4a53-9f0e-0d2b1f6f1b9c", "notification_id": str(2**40),
                       "type": "flow.failed", "severity": "critical"},
                      tokens, "HERALD_INCIDENT", "https://herald.example.com/app/#n=1099511627776")
    message = Message(Target(1, 1, "t" * 152, "token", "com.example.admin", "production", 1), payload,
                      "critical", "flow:orders-to-erp:prod", 3600, "flow:orders-to-erp:prod")
    encoders: dict[str, tuple[Callable[[Message], bytes], int]] = {
        "fcm": (fcm.encode, MAX_PAYLOAD_BYTES), "apns": (apns.encode, MAX_PAYLOAD_BYTES),
        "webpush": (webpush.cleartext, webpush.MAX_CLEARTEXT_BYTES)}
    encode, limit = encoders[channel]
    encoded = encode(message)
    assert len(encoded) <= limit
    text = encoded.decode()
    assert all(token in text for token in tokens.values())  # never cut: only the body and title are
    doc = json.loads(encoded)
    body = {"fcm": lambda: doc["message"]["notification"]["body"], "apns": lambda: doc["aps"]["alert"]["body"],
            "webpush": lambda: doc["body"]}[channel]()
    # the body gave way, and kept about half of itself (FCM counts its whole request, a page's Android
    # notification options included)
    assert body.endswith(ELLIPSIS) and len(body) > 450


def test_the_payloads_in_docs_actions_md_are_what_herald_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the notification the examples show, its tokens signed as they were for the page
    monkeypatch.setenv("HERALD_ACTION_KEYS", "k2:" + "x" * 43)
    reload()
    try:
        expires = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
        tokens = {action: mint(4711, "chen", action, expires) for action in actions.ACTIONS["incident"]}
        event_id = "0b6f3c1e-8d0a-4d3e-9a55-2f1c0e7b9a10"
        payload = Payload("[prod] managed flow failed: orders-to-erp", "HTTP 502 from the ERP after 3 attempts",
                          f"herald://events/{event_id}?notification=4711",
                          {"event_id": event_id, "notification_id": "4711", "type": "flow.failed", "severity": "error"},
                          tokens, "HERALD_INCIDENT", "https://herald.example.com/app/#n=4711")
        message = Message(Target(1, 1, "<registration token>", "token", "com.example.admin", "production", 1), payload,
                          "error", "flow:orders-to-erp:prod", 86400, "flow:orders-to-erp:prod")
        # then each JSON example of the page is exactly what the channel encodes
        doc = (Path(__file__).resolve().parents[2] / "docs" / "actions.md").read_text()
        apns_doc, fcm_doc, webpush_doc = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", doc, re.S)]
        assert json.loads(apns.encode(message)) == apns_doc
        assert json.loads(fcm.encode(message))["message"] == fcm_doc["message"]
        assert json.loads(webpush.cleartext(message)) == webpush_doc
    finally:
        monkeypatch.undo()
        reload()
