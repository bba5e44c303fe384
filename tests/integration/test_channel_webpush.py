"""Web Push through the local fake: VAPID verified, aes128gcm really decrypted, the status table."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald.channels import vapid
from herald.channels.sender import MAX_ANSWER_CHARS
from herald.channels.types import Message, Payload, Target
from herald.channels.webpush import provider as webpush_module
from herald.channels.webpush.provider import ERRORS, MAX_CLEARTEXT_BYTES, WebPushChannel
from tests.integration.conftest import fresh_fakes


@pytest.fixture
def webpush(fakes: FakeProviders, clean: None) -> Iterator[WebPushChannel]:
    fresh_fakes(fakes)
    with herald_env(fakes.env()):
        channel = WebPushChannel()
        channel.alert_auth = lambda reason, count: None  # type: ignore[method-assign]
        yield channel
        channel.close()


def message(subscription: dict[str, object] | str, *, delivery_id: int = 1, body: str = "Order PO-1 from ACME",
            severity: str = "info") -> Message:
    token = subscription if isinstance(subscription, str) else json.dumps(subscription)
    return Message(Target(delivery_id, delivery_id, token, "subscription", "portal", "production", 1),
                   Payload("[prod] order submitted: PO-1", body, "herald://events/3", {"event_id": "3"}),
                   severity, "orders.eu:PO-1", 7200)


def test_the_browser_decrypts_the_notification_and_headers_follow_the_rfcs(fakes: FakeProviders,
                                                                           webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe(application_server_key=webpush.vapid.public)
    [result] = webpush.send([message(sub, severity="critical")])
    assert result.outcome == "sent" and result.provider_status == "201"
    seen = list(fakes.providers["webpush"].seen)[-1]
    assert json.loads(seen["text"]) == {"title": "[prod] order submitted: PO-1", "body": "Order PO-1 from ACME",
                                        "link": "herald://events/3", "data": {"event_id": "3"},
                                        "requireInteraction": True}
    assert seen["ttl"] == "7200"  # never 0: an offline device still gets it
    assert seen["urgency"] == "high"
    assert seen["topic"] and len(seen["topic"]) <= 32


def test_a_flow_failed_page_stays_on_screen_and_a_business_event_does_not(fakes: FakeProviders,
                                                                          webpush: WebPushChannel) -> None:
    # given a flow.failed page (severity error) and a business event (info) with no dedup key
    page_sub, business_sub = fakes.webpush.subscribe(), fakes.webpush.subscribe()
    business = Message(Target(2, 2, json.dumps(business_sub), "subscription", "portal", "production", 1),
                       Payload("[prod] order submitted: PO-2", "ACME", "herald://events/4", {"event_id": "4"}),
                       "info", "herald-n4", 3600)
    # when herald sends both
    assert {r.outcome for r in webpush.send([message(page_sub, severity="error"), business])} == {"sent"}
    seen = {s["token"]: s for s in fakes.providers["webpush"].seen}
    page, quiet = seen[fakes.webpush.endpoint_token(page_sub)], seen[fakes.webpush.endpoint_token(business_sub)]
    # then the page is urgent and asks the service worker to keep it until acted on
    assert page["urgency"] == "high" and json.loads(page["text"])["requireInteraction"] is True
    # and the business event is normal, goes away as usual, and still carries its Topic
    assert quiet["urgency"] == "normal" and "requireInteraction" not in json.loads(quiet["text"])
    assert quiet["topic"] == webpush_module.topic("herald-n4") and page["topic"] == webpush_module.topic(
        "orders.eu:PO-1")


def test_pywebpush_refuses_a_subscription_without_an_auth_secret(fakes: FakeProviders,
                                                                 webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe()
    del sub["keys"]["auth"]  # type: ignore[attr-defined]
    [result] = webpush.send([message(sub)])
    assert result.outcome == "invalid_token" and "auth" in (result.reason or "")
    assert not list(fakes.providers["webpush"].seen)


# status forced by the push service -> herald's outcome
TABLE = [(404, "invalid_token"), (410, "invalid_token"), (413, "permanent"), (429, "transient"),
         (400, "permanent"), (401, "auth"), (403, "auth"), (500, "transient"), (503, "transient")]


@pytest.mark.parametrize(("status", "outcome"), TABLE)
def test_every_status_maps_to_its_table_row(fakes: FakeProviders, webpush: WebPushChannel, status: int,
                                            outcome: str) -> None:
    sub = fakes.webpush.subscribe()
    fakes.providers["webpush"].switches.errors[fakes.webpush.endpoint_token(sub)] = str(status)
    [result] = webpush.send([message(sub)])
    assert result.outcome == outcome, result
    assert result.provider_status == str(status)


def test_every_table_row_is_covered() -> None:
    assert {k for k in ERRORS if k.isdigit()} == {str(s) for s, _ in TABLE if s < 500}


def test_429_carries_the_retry_after_of_the_push_service(fakes: FakeProviders, webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe()
    fakes.providers["webpush"].switches.throttle = 1
    fakes.providers["webpush"].switches.retry_after_s = 7
    [result] = webpush.send([message(sub)])
    assert (result.outcome, result.retry_after_s) == ("transient", 7.0)


def test_an_unsubscribed_browser_is_pruned(fakes: FakeProviders, webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe()
    fakes.providers["webpush"].switches.dead_tokens.add(fakes.webpush.endpoint_token(sub))
    [result] = webpush.send([message(sub)])
    assert result.outcome == "invalid_token" and result.provider_status == "410"


def test_a_subscription_made_for_another_vapid_key_is_refused_and_kept(fakes: FakeProviders,
                                                                       webpush: WebPushChannel) -> None:
    other = vapid.b64url(b"\x04" + b"\x01" * 64)
    sub = fakes.webpush.subscribe(application_server_key=other)
    [result] = webpush.send([message(sub)])
    assert result.outcome == "auth"  # herald's key is wrong, not the browser's subscription


def test_a_malformed_subscription_is_deactivated_without_a_request(fakes: FakeProviders,
                                                                   webpush: WebPushChannel) -> None:
    [result] = webpush.send([message("not json")])
    assert result.outcome == "invalid_token"
    assert not list(fakes.providers["webpush"].seen)


def test_a_long_body_is_trimmed_to_fit_the_encrypted_record(fakes: FakeProviders, webpush: WebPushChannel) -> None:
    sub = fakes.webpush.subscribe()
    [result] = webpush.send([message(sub, body="\u00e9" * 5000)])  # two bytes per character
    assert result.outcome == "sent"
    text = list(fakes.providers["webpush"].seen)[-1]["text"]
    assert len(text.encode()) <= MAX_CLEARTEXT_BYTES and json.loads(text)["body"].endswith("\u2026")


# --- where herald may POST: an endpoint is someone else's URL (issue 7) ----------------------------


class Internal(BaseHTTPRequestHandler):
    """An internal service on this machine: /redirect sends a 307 to /secret, which answers a huge 500."""

    hits: list[str] = []

    def do_POST(self) -> None:  # the stdlib's name
        self.hits.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/redirect"):
            self.send_response(307)
            self.send_header("Location", "/secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = ("internal error\n\x1b[31mdb password=hunter2\x1b[0m " + "x" * 200_000).encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def internal() -> Iterator[str]:
    Internal.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def subscription_at(endpoint: str, fakes: FakeProviders, key: str) -> dict[str, Any]:
    sub = fakes.call(lambda: fakes.webpush.subscribe(application_server_key=key))
    return {**sub, "endpoint": endpoint}


def test_a_redirect_is_not_followed(fakes: FakeProviders, webpush: WebPushChannel, internal: str) -> None:
    # given an endpoint that answers 307 towards an internal service (loopback allowed, as for the fakes)
    [result] = webpush.send([message(subscription_at(f"{internal}/redirect", fakes, webpush.vapid.public))])
    # then herald never reaches the internal service, and says why it stopped
    assert Internal.hits == ["/redirect"]
    assert result.outcome == "permanent" and result.provider_status == "307"
    assert "redirect" in (result.reason or "")


def test_what_a_service_answered_is_stored_short_and_on_one_line(fakes: FakeProviders, webpush: WebPushChannel,
                                                                 internal: str) -> None:
    [result] = webpush.send([message(subscription_at(f"{internal}/secret", fakes, webpush.vapid.public))])
    assert result.outcome == "transient" and result.provider_status == "500"
    reason = result.reason or ""
    assert reason.startswith("500: internal error") and len(reason) <= MAX_ANSWER_CHARS + 100
    assert "\n" not in reason and "\x1b" not in reason


@pytest.mark.parametrize("endpoint", ["https://169.254.169.254/latest/meta-data", "https://10.1.2.3/push",
                                      "http://push.example.com/push", "file:///etc/passwd"])
def test_an_endpoint_stored_before_the_checks_is_refused_at_send_time(fakes: FakeProviders, webpush: WebPushChannel,
                                                                      endpoint: str) -> None:
    # given a subscription row written before herald checked endpoints (no door accepts it today)
    [result] = webpush.send([message(subscription_at(endpoint, fakes, webpush.vapid.public))])
    # then nothing is sent and the device is deactivated
    assert result.outcome == "invalid_token" and result.provider_status == "refused"
    assert fakes.providers["webpush"].requests == 0


def test_loopback_is_refused_at_send_time_without_the_setting(fakes: FakeProviders, clean: None,
                                                                internal: str) -> None:
    with herald_env({**fakes.env(), "HERALD_WEBPUSH_ALLOW_LOOPBACK": "false"}):
        channel = WebPushChannel()
        try:
            [result] = channel.send([message(subscription_at(f"{internal}/secret", fakes, channel.vapid.public))])
        finally:
            channel.close()
    assert result.outcome == "invalid_token" and "loopback" in (result.reason or "")
    assert Internal.hits == []


class InternalDns(AbstractResolver):
    """A DNS answer pointing a public-looking name at an internal address (rebinding)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        self.asked.append(host)
        return [{"hostname": host, "host": "10.20.30.40", "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def test_a_host_name_that_resolves_to_an_internal_address_is_refused_at_send_time(
        fakes: FakeProviders, webpush: WebPushChannel, monkeypatch: pytest.MonkeyPatch) -> None:
    dns = InternalDns()
    monkeypatch.setattr(webpush_module.aiohttp, "DefaultResolver", lambda: dns)
    webpush.close()  # the next send opens a session with the resolver above
    [result] = webpush.send([message(subscription_at("https://push.example.com/push/1", fakes,
                                                     webpush.vapid.public))])
    assert dns.asked == ["push.example.com"]
    assert result.outcome == "permanent" and "10.20.30.40" in (result.reason or "")
