"""The responder page (/app/) in a real headless Chromium against a real `herald api` process.

A person signs in with a one-time link, sees what waits for them, answers it (the database and the write-back
webhook see the answer), votes on an approval towards its quorum; the page's service worker subscribes, shows a
push herald built and answers from its button. The one thing not real is Chromium's push service: a CI machine
cannot reach it, so ``PushManager.subscribe`` answers with a made-up (well-formed) subscription, and the push is
delivered through the DevTools protocol (``ServiceWorker.deliverPushMessage``) instead of by the push service.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from devtools.fakes.testing import herald_env
from devtools.receiver import Receiver
from herald import actions, db, directory, signin, writeback
from herald.models import Answer, Approval, ApprovalVote, Device, Incident, Notification
from tests.browser import scenes
from tests.browser.conftest import DESKTOP, PHONE, SCREENSHOTS, Browser
from tests.integration.conftest import DATA_DIR, ROOT, SAMPLE_DIRECTORY, track_log, wait_until
from tests.integration.test_signin import AUDIENCE, ISSUER, IdentityProvider

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
SECRET_VAR = "HERALD_TEST_WEBHOOK_SECRET"
WAIT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def api(idp: IdentityProvider) -> Iterator[str]:
    """`herald api` on a free loopback port, with a VAPID key, its own URL as HERALD_PUBLIC_URL, and a local
    identity provider for OIDC sign-in."""
    from herald.channels import vapid

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = DATA_DIR / "browser-vapid.pem"
    if not key.exists():
        vapid.generate(key)
    env = {**os.environ, "HERALD_PUBLIC_URL": url, "HERALD_WEBPUSH_VAPID_KEY_FILE": str(key),
           "HERALD_WEBHOOK_ALLOW_LOOPBACK": "true", SECRET_VAR: SECRET,
           "HERALD_OIDC_ISSUER": ISSUER, "HERALD_OIDC_AUDIENCE": AUDIENCE, "HERALD_OIDC_JWKS_URL": idp.url}
    log = track_log(DATA_DIR / f"api-browser-{port}.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(url), timeout_s=90, message="herald api answering")
        with herald_env({"HERALD_PUBLIC_URL": url, "HERALD_WEBHOOK_ALLOW_LOOPBACK": "true", SECRET_VAR: SECRET}):
            yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def people(clean: None, api: str, tmp_path: Path) -> Iterator[Receiver]:
    """The sample directory, with a write-back webhook of prod to a receiver that verifies signatures."""
    spec = yaml.safe_load(SAMPLE_DIRECTORY.read_text())
    with Receiver(SECRET) as receiver:
        spec["webhooks"] = [{"id": "admin-prod", "environment": "prod", "url": f"{receiver.url}/hooks",
                             "secret": f"env:{SECRET_VAR}", "kinds": ["incident.*", "approval.*"]}]
        path = tmp_path / "directory.yaml"
        path.write_text(yaml.safe_dump(spec))
        with db.session() as s:
            directory.apply(directory.load(path), s)
        yield receiver


def link_for(api: str, person: str, fragment: str = "") -> str:
    with db.session() as s:
        token = signin.create_link(s, person)
    return f"{api}/app/#signin={token}{fragment}"


# --- the page as a person uses it -------------------------------------------------------------------------


def find(browser: Browser, css: str, timeout_s: float = WAIT_S) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec_
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser.driver, timeout_s).until(ec_.visibility_of_element_located((By.CSS_SELECTOR, css)))


def text_of(browser: Browser, css: str) -> str:
    """The element's text now, read in one step (the page re-renders its list when it changes)."""
    found = browser.driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)
    return str(found)


def attribute(browser: Browser, css: str, name: str) -> str | None:
    found = browser.driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null", css, name)
    return None if found is None else str(found)


def press(browser: Browser, css: str) -> None:
    """Click, again if the page re-rendered the element in between."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(5):
        try:
            find(browser, css).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept changing under the click")


def until_text(browser: Browser, css: str, needle: str) -> str:
    return str(wait_until(lambda: needle in text_of(browser, css) and text_of(browser, css), timeout_s=WAIT_S,
                          interval_s=0.1, message=f"{needle!r} in {css}"))


def card(subject: str) -> str:
    return f'li.card[data-subject="{subject}"]'


def sign_in(browser: Browser, api: str, person: str, fragment: str = "") -> None:
    browser.driver.get(link_for(api, person, fragment))
    until_text(browser, "#status", f"Signed in as {person}")
    assert "signin=" not in browser.driver.current_url  # the link left the address bar


def test_sign_in_acknowledge_an_incident_and_see_it_everywhere(browsers: Any, api: str, people: Receiver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    incident_id, _ = scenes.incident("alice", escalation=1)
    browser = browsers(PHONE)
    sign_in(browser, api, "alice")
    entry = find(browser, card(f"incident:{incident_id}"))
    assert "orders-to-erp failed" in entry.text and "open" in entry.text and "step 1" in entry.text
    assert "nobody yet" in entry.text  # no assignee
    until_text(browser, "#who", "Alice Martin")

    # keyboard only: type a comment, tab to Acknowledge, press Enter
    comment = entry.find_element(By.CSS_SELECTOR, "textarea")
    assert browser.driver.find_element(By.CSS_SELECTOR, f'label[for="{comment.get_attribute("id")}"]').text
    comment.send_keys("on it, calling the ERP team")
    comment.send_keys(Keys.TAB)
    focused = browser.driver.switch_to.active_element
    assert focused.text == "Acknowledge"
    focused.send_keys(Keys.ENTER)

    until_text(browser, "#status", "Done: you acknowledged orders-to-erp failed")
    wait_until(lambda: browser.driver.switch_to.active_element.get_attribute("data-subject") ==
               f"incident:{incident_id}", timeout_s=WAIT_S, message="focus on the card answered")
    until_text(browser, card(f"incident:{incident_id}") + " .feedback", "Done: you acknowledged")
    until_text(browser, card(f"incident:{incident_id}"), "acknowledged")
    until_text(browser, card(f"incident:{incident_id}"), "alice")  # the assignee now
    until_text(browser, "#answers", "Acknowledge")
    assert "on it, calling the ERP team" in text_of(browser, "#answers")
    with db.session() as s:
        row = s.get_one(Incident, incident_id)
        assert (row.status, row.assignee) == ("acknowledged", "alice")
        [answer] = s.scalars(select(Answer).where(Answer.person_id == "alice")).all()
        assert (answer.action, answer.outcome, answer.via, answer.comment) == \
            ("acknowledge", "applied", "token", "on it, calling the ERP team")

    # the admin platform hears of it through the write-back webhook, signature verified
    assert writeback.deliver_due()["delivered"] >= 1
    got = [p for p in people.verified if p["subject"] == f"incident:{incident_id}"]
    assert [p["type"] for p in got] == ["incident.acknowledged"]
    assert got[0]["data"]["by"] == "alice"

    # the same button again: refused, and said so
    press(browser, card(f"incident:{incident_id}") + " button.acknowledge")
    until_text(browser, "#status", "Not applied: Already answered")

    # the sign-in link worked once
    browser.driver.find_element(By.ID, "sign-out").click()
    until_text(browser, "#status", "Signed out")
    with db.session() as s:
        link = signin.create_link(s, "alice")
    browser.driver.get(f"{api}/app/#signin={link}")
    until_text(browser, "#status", "Signed in as alice")
    browser.driver.find_element(By.ID, "sign-out").click()
    browser.driver.get(f"{api}/app/#signin={link}")
    until_text(browser, "#status", "this sign-in link was already used")
    assert find(browser, "#signed-out").is_displayed()


def test_sign_in_with_the_identity_providers_token(browsers: Any, api: str, idp: IdentityProvider,
                                                   people: Receiver) -> None:
    incident_id, notification_id = scenes.incident("alice")
    browser = browsers(PHONE)
    browser.driver.get(f"{api}/app/#id_token={idp.token(email='alice@example.com')}&n={notification_id}")
    until_text(browser, "#status", "Signed in with your identity provider")
    until_text(browser, "#who", "Alice Martin")
    find(browser, card(f"incident:{incident_id}") + ".focus")  # the notification it was opened for
    assert "id_token" not in browser.driver.current_url
    browser.driver.get(f"{api}/app/#id_token={idp.token(email='nobody@example.com')}")
    until_text(browser, "#status", "Sign-in refused: no single active directory person matches")
    assert find(browser, "#signed-out").is_displayed()


def test_an_approver_votes_towards_the_quorum_and_the_requester_cannot(browsers: Any, api: str,
                                                                       people: Receiver) -> None:
    from selenium.webdriver.common.by import By

    approval_id, _ = scenes.approval(["alice", "bruno", "dana"], requester="dana", quorum=2)
    subject = card(f"approval:{approval_id}")
    bruno = browsers(PHONE)  # bruno's page is open while alice votes
    sign_in(bruno, api, "bruno")
    until_text(bruno, subject, "0 of 2 approvals")
    alice = browsers(DESKTOP)
    sign_in(alice, api, "alice")
    until_text(alice, subject, "0 of 2 approvals")
    assert attribute(alice, subject + " progress", "value") == "0"
    find(alice, subject + " textarea").send_keys("checked the change ticket")
    press(alice, subject + " button.approve")
    until_text(alice, "#status", "Done: you approved api billing-api")
    until_text(alice, subject, "1 of 2 approvals")
    assert attribute(alice, subject + " progress", "value") == "1"
    until_text(alice, subject, "alice: approve")
    # alice voted: her buttons are gone, the approval still waits for a second approver
    wait_until(lambda: not alice.driver.find_elements(By.CSS_SELECTOR, subject + " button.approve"),
               timeout_s=WAIT_S, message="alice's vote buttons gone")
    assert "You answered: Approve" in text_of(alice, subject)
    with db.session() as s:
        assert s.get_one(Approval, approval_id).status == "pending"
        assert [(v.person_id, v.decision, v.comment) for v in s.scalars(select(ApprovalVote))] == \
            [("alice", "approve", "checked the change ticket")]

    # bruno's page updates by itself (it polls; no reload)
    until_text(bruno, subject, "1 of 2 approvals")
    assert attribute(bruno, subject + " button.approve", "disabled") is None

    dana = browsers(PHONE)
    sign_in(dana, api, "dana")
    until_text(dana, subject, "You cannot vote")
    assert not dana.driver.find_elements(By.CSS_SELECTOR, subject + " button")


def fake_subscription() -> dict[str, Any]:
    """A subscription as a push service would hand out: an https endpoint, a real P-256 key, a 16-byte secret."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"endpoint": f"https://push.example.com/sub/browser-{secrets.token_hex(4)}", "expirationTime": None,
            "keys": {"p256dh": b64(key), "auth": b64(secrets.token_bytes(16))}}


# PushManager.subscribe, answered without the push service (unreachable from CI); unsubscribe forgets it.
FAKE_PUSH_SERVICE = """
(() => {
  const made = %s;
  let current = null;
  const subscription = () => ({endpoint: made.endpoint, expirationTime: null, options: {},
    toJSON: () => made, unsubscribe: async () => { current = null; return true; }});
  PushManager.prototype.subscribe = async function () { current = subscription(); return current; };
  PushManager.prototype.getSubscription = async function () { return current; };
})();
"""


def deliver_push(browser: Browser, api: str, payload: dict[str, Any]) -> None:
    """Deliver a push to the profile's one service worker registration, as the push service would.

    The DevTools protocol wants the registration's id, which no script can read and which Selenium's
    command-only CDP bridge never reports (it comes as an event); Chromium numbers a profile's registrations from
    0, and delivering to an id no registration has does nothing. The profile is this test's own and holds one
    registration, so offering the push to the first few ids delivers it exactly once (the test checks: one
    notification)."""
    browser.driver.execute_cdp_cmd("ServiceWorker.enable", {})
    for registration_id in range(8):
        browser.driver.execute_cdp_cmd("ServiceWorker.deliverPushMessage", {
            "origin": api, "registrationId": str(registration_id), "data": json.dumps(payload)})


def shown_notifications(browser: Browser) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = browser.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        navigator.serviceWorker.ready.then((r) => r.getNotifications()).then((shown) => done(shown.map((n) => ({
          title: n.title, body: n.body, tag: n.tag, data: n.data, requireInteraction: n.requireInteraction,
          actions: n.actions.map((a) => ({action: a.action, title: a.title}))}))));""")
    return found


def test_the_service_worker_shows_a_herald_push_and_answers_from_its_button(browsers: Any, api: str,
                                                                            people: Receiver) -> None:
    from selenium.webdriver.common.by import By

    browser = browsers(PHONE)
    made = fake_subscription()
    browser.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                   {"source": FAKE_PUSH_SERVICE % json.dumps(made)})
    browser.driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": api, "permissions": ["notifications"]})
    sign_in(browser, api, "alice")

    # "Turn on notifications": the service worker registers, the subscription reaches POST /v1/devices
    push = find(browser, "#push")
    assert push.text == "Turn on notifications"
    push.click()
    until_text(browser, "#status", "This browser now receives your notifications")
    until_text(browser, "#push", "Turn off notifications")
    with db.session() as s:
        [device] = s.scalars(select(Device).where(Device.person_id == "alice", Device.active.is_(True),
                                                  Device.token.contains(made["endpoint"]))).all()
        assert device.channel == "webpush" and json.loads(device.token)["keys"] == made["keys"]

    # a push as herald's Web Push channel builds it for alice's notification of a new incident
    incident_id, notification_id = scenes.incident("alice", flow="shipments-to-wms",
                                                   error="connection reset by the WMS")
    payload = scenes.webpush_payload(notification_id)
    assert payload["url"] == f"{api}/app/#n={notification_id}" and set(payload["tokens"]) == {
        "acknowledge", "resolve", "follow_up"}
    deliver_push(browser, api, payload)
    [shown] = wait_until(lambda: shown_notifications(browser), timeout_s=WAIT_S, message="the notification")
    assert shown["title"] == "[prod] managed flow failed: shipments-to-wms"
    assert "connection reset by the WMS" in shown["body"]
    assert shown["tag"] == f"herald-{notification_id}"
    assert shown["requireInteraction"] is bool(payload.get("requireInteraction"))
    assert shown["actions"] == [{"action": "acknowledge", "title": "Acknowledge"},
                                {"action": "resolve", "title": "Resolve"}]  # Chromium shows two buttons
    # the open page heard of the push and lists the new incident without a reload
    find(browser, card(f"incident:{incident_id}"))

    # its Resolve button, pressed: the worker posts that button's token, and the API applies it
    result = browser.driver.execute_async_script("""
        const [tag, action, done] = arguments;
        const channel = new MessageChannel();
        channel.port1.onmessage = (event) => done(event.data);
        navigator.serviceWorker.ready.then((r) => r.active.postMessage({type: "herald.press", tag, action},
                                                                        [channel.port2]));""",
                                                 shown["tag"], "resolve")
    assert result["ok"] is True and result["status"] == 200, result
    with db.session() as s:
        assert s.get_one(Incident, incident_id).status == "resolved"
        [answer] = s.scalars(select(Answer).where(Answer.subject_id == incident_id)).all()
        assert (answer.person_id, answer.action, answer.outcome, answer.via) == ("alice", "resolve", "applied", "token")
    until_text(browser, "#status", "Done: your answer from the notification was applied")
    wait_until(lambda: not browser.driver.find_elements(By.CSS_SELECTOR, card(f"incident:{incident_id}")),
               timeout_s=WAIT_S, message="the resolved incident leaves the list")
    assert shown_notifications(browser) == []

    # the same push again, pressed again: the token is used up, and the notification says so
    deliver_push(browser, api, payload)
    wait_until(lambda: shown_notifications(browser), timeout_s=WAIT_S, message="the second notification")
    again = browser.driver.execute_async_script("""
        const [tag, action, done] = arguments;
        const channel = new MessageChannel();
        channel.port1.onmessage = (event) => done(event.data);
        navigator.serviceWorker.ready.then((r) => r.active.postMessage({type: "herald.press", tag, action},
                                                                        [channel.port2]));""",
                                                shown["tag"], "acknowledge")
    assert again["ok"] is False and again["status"] == 409
    [refused] = wait_until(lambda: shown_notifications(browser), timeout_s=WAIT_S, message="the refusal shown")
    assert refused["title"].startswith("Not applied") and refused["actions"] == []
    until_text(browser, "#status", "Not applied: Already answered")

    # "Turn off notifications": the device is removed
    find(browser, "#push").click()
    until_text(browser, "#status", "no longer receives your notifications")
    with db.session() as s:
        assert not s.get_one(Device, device.id).active


def test_screenshots_at_phone_and_desktop_width(browsers: Any, api: str, people: Receiver) -> None:
    """The page with something of each kind, as a phone and a desktop show it (saved for a person to look at)."""
    from datetime import timedelta

    scenes.incident("alice", escalation=1, severity="critical")
    scenes.incident("alice", flow="invoices-to-bank", error="certificate rejected by the bank's gateway",
                    status="acknowledged", assignee="alice")
    approval_id, _ = scenes.approval(["alice", "bruno"], requester="dana", quorum=2, votes=(("bruno", "approve"),))
    scenes.notice("alice")
    scenes.notice("alice", type="ops.queue_backlog")
    old, _ = scenes.incident("alice", flow="edi-inbound", status="resolved")
    scenes.answered("alice", "incident", old, "resolve", comment="replayed the 14 stuck files")
    scenes.answered("alice", "incident", old, "acknowledge", outcome="refused", ago=timedelta(minutes=30),
                    reason=f"incident {old} is already resolved")
    browser = browsers(PHONE)
    sign_in(browser, api, "alice")
    find(browser, card(f"approval:{approval_id}"))
    until_text(browser, "#answers", "replayed the 14 stuck files")
    browser.driver.execute_script("document.getElementById('status').textContent = ''")
    saved = []
    for name, size in (("phone", PHONE), ("desktop", DESKTOP)):
        browser.resize(size)
        browser.driver.execute_script("window.scrollTo(0, 0)")
        path = SCREENSHOTS / f"responder-{name}.png"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert browser.driver.save_screenshot(str(path))
        saved.append(path)
        # nothing wider than the screen: no sideways scrolling at either width
        assert browser.driver.execute_script("return document.documentElement.scrollWidth") <= size[0]
    assert all(p.stat().st_size > 10_000 for p in saved)


def test_an_email_action_link_asks_to_confirm_then_answers_without_a_session(browsers: Any, api: str,
                                                                               people: Receiver) -> None:
    """The e-mail fallback's links (herald/channels/email/message.py): the page opened with the action's token in
    its fragment. Opening it applies nothing (a mail scanner may open links); the person confirms."""
    from herald.channels.email.message import action_links
    from herald.channels.types import Message, Payload, Target
    from herald.payload import responder_url

    incident_id, notification_id = scenes.incident("alice")
    with db.session() as s:
        tokens = actions.tokens_for(s, s.get_one(Notification, notification_id))
    message = Message(target=Target(0, 0, "alice@example.com", "email", "default", "production", 0),
                      payload=Payload("t", "b", "herald://n", {}, tokens, None, responder_url(notification_id)),
                      severity="error", collapse_key=None, ttl_s=60)
    links = dict(action_links(message))
    assert set(links) >= {"Acknowledge", "Resolve"}
    link = links["Acknowledge"].replace(responder_url(notification_id).split("/app/")[0], api)
    browser = browsers(PHONE)  # not signed in
    browser.driver.get(link)
    until_text(browser, "#confirm-what", "Acknowledge")
    assert "token=" not in browser.driver.current_url  # the token left the address bar
    with db.session() as s:
        assert s.get_one(Incident, incident_id).status == "open"  # nothing applied on opening the link
    find(browser, "#confirm-comment").send_keys("from my mail")
    press(browser, "#confirm-yes")
    until_text(browser, "#status", "Done: you acknowledged")
    with db.session() as s:
        row = s.get_one(Incident, incident_id)
        assert (row.status, row.assignee) == ("acknowledged", "alice")
        answer = s.scalars(select(Answer).where(Answer.person_id == "alice")).one()
        assert (answer.action, answer.via, answer.comment) == ("acknowledge", "token", "from my mail")
    # the same link again: refused, and said so
    browser.driver.get(link)
    press(browser, "#confirm-yes")
    until_text(browser, "#status", "Not applied: Already answered")
