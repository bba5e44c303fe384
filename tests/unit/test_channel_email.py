"""The e-mail channel on its own: the message it builds, its settings, its SMTP answers, and no secret in what
it records. The SMTP server is the local fake (devtools/fakes/smtp.py) on a loop of this process."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from devtools.fakes.smtp import FakeSmtp
from devtools.fakes.state import Provider
from devtools.fakes.testing import herald_env
from herald.channels.email import ERRORS, EmailSettings, address
from herald.channels.email.message import build
from herald.channels.email.provider import EmailChannel, classify
from herald.channels.types import Message, Payload, Target
from herald.errors import InvalidDevice

PAGE_URL = "https://herald.example.com/app/#n=4711"
SECRET = "s3cr3t-pa55word-never-shown"


def message(to: str = "ana@example.com", delivery_id: int = 7, *, severity: str = "error",
            title: str = "[prod] managed flow failed: orders-to-erp",
            actions: dict[str, str] | None = None) -> Message:
    payload = Payload(title, "HTTP 502 from the ERP\nafter 3 attempts", "herald://events/e1?notification=4711",
                      {"event_id": "e1"}, {"acknowledge": "k2.ack+/=", "resolve": "k2.res"} if actions is None
                      else actions, "HERALD_INCIDENT", PAGE_URL)
    return Message(Target(delivery_id, 3, to, "token", "default", "production", 1), payload, severity,
                   "flow:orders-to-erp:prod", 3600)


def parsed(mail: EmailMessage) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(mail.as_bytes(), policy=default))


# --- the message -----------------------------------------------------------------------------------------


def test_an_email_carries_the_page_in_text_and_html_with_one_https_link_per_action() -> None:
    # when a page with two actions is built
    mail = parsed(build(message(), "herald@example.com"))
    # then the subject is the title, the addresses are herald's and the person's
    assert (mail["Subject"], mail["From"], mail["To"]) == (
        "[prod] managed flow failed: orders-to-erp", "herald@example.com", "ana@example.com")
    text = cast(EmailMessage, mail.get_body(("plain",))).get_content()
    html = cast(EmailMessage, mail.get_body(("html",))).get_content()
    # and both parts say what happened, and link each action to the responder page with its token in the fragment
    assert "HTTP 502 from the ERP" in text and "HTTP 502 from the ERP" in html
    ack = f"{PAGE_URL}&action=acknowledge&token=k2.ack%2B%2F%3D"
    assert f"Acknowledge: {ack}" in text
    assert f"Resolve: {PAGE_URL}&action=resolve&token=k2.res" in text
    assert f'href="{ack}"' in html.replace("&amp;", "&")
    # and a page is marked important; herald asks for no auto-reply
    assert mail["Importance"] == "high" and mail["Auto-Submitted"] == "auto-generated"
    assert mail["X-Herald-Collapse-Key"] == "flow:orders-to-erp:prod"


def test_every_copy_of_one_delivery_has_the_same_message_id_and_another_delivery_another() -> None:
    first = build(message(delivery_id=7), "herald@example.com")["Message-ID"]
    assert first == build(message(delivery_id=7), "herald@example.com")["Message-ID"] == "<herald.d7@example.com>"
    assert build(message(delivery_id=8), "herald@example.com")["Message-ID"] != first


def test_text_from_the_event_is_escaped_in_html_and_cannot_add_headers() -> None:
    html_part = cast(EmailMessage, parsed(build(message(title="<b>x</b>"), "herald@example.com"))
                     .get_body(("html",))).get_content()
    assert "<b>x</b>" not in html_part and "&lt;b&gt;x&lt;/b&gt;" in html_part
    with pytest.raises(ValueError):
        build(message(title="x\r\nBcc: mallory@example.com"), "herald@example.com").as_bytes()


def test_a_notification_without_actions_has_only_the_page_link() -> None:
    text = cast(EmailMessage, parsed(build(message(actions={}), "herald@example.com"))
                .get_body(("plain",))).get_content()
    assert "action=" not in text and f"Open: {PAGE_URL}" in text


# --- addresses and settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, stored", [("Ana.Silva+pages@Example.COM", "Ana.Silva+pages@example.com"),
                                           ("ops@localhost", "ops@localhost")])
def test_an_address_is_stored_with_its_domain_lower_cased(value: str, stored: str) -> None:
    assert address(value) == stored


@pytest.mark.parametrize("value", ["ana", "ana@", "@example.com", "ana@@example.com", "ana smith@example.com",
                                   "ana@example.com\r\nBcc: x@example.com", "<ana@example.com>", "a" * 250 + "@x.io",
                                   42])
def test_an_address_that_is_not_a_plain_addr_spec_is_refused(value: Any) -> None:
    with pytest.raises(InvalidDevice):
        address(value)


def test_settings_are_checked_when_read(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="1 to 65535"):
        EmailSettings(smtp_port=0)
    with pytest.raises(ValidationError, match="go together"):
        EmailSettings(smtp_username="herald")
    with pytest.raises(ValidationError, match="only over TLS"):
        EmailSettings(smtp_host="smtp.example.com", smtp_tls="none", smtp_username="herald",
                      smtp_password_file=tmp_path / "pw")
    with pytest.raises(ValidationError, match="smtp_tls"):
        EmailSettings(smtp_tls="ssl")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="FROM_ADDRESS"):
        EmailSettings(from_address="herald")
    # a relay on this machine may take credentials over plain SMTP
    EmailSettings(smtp_host="127.0.0.1", smtp_tls="none", smtp_username="herald", smtp_password_file=tmp_path / "pw")


def test_settings_come_from_herald_email_variables_and_the_password_only_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(SECRET + "\n")
    with herald_env({"HERALD_EMAIL_SMTP_HOST": "smtp.example.com", "HERALD_EMAIL_SMTP_PORT": "465",
                     "HERALD_EMAIL_SMTP_TLS": "tls", "HERALD_EMAIL_SMTP_USERNAME": "herald",
                     "HERALD_EMAIL_SMTP_PASSWORD_FILE": str(secret), "HERALD_EMAIL_SMTP_PASSWORD": "ignored"}):
        settings = EmailSettings.current()
        assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls) == ("smtp.example.com", 465, "tls")
        assert settings.password() == SECRET
        assert SECRET not in repr(settings) and not hasattr(settings, "smtp_password")


@pytest.mark.parametrize("code, text, outcome", [
    (550, "5.1.1 <x@example.com>: User unknown", "invalid_token"),
    (550, "5.7.1 rejected by policy", "permanent"),
    (550, "mailbox unavailable", "permanent"),
    (535, "5.7.8 Authentication credentials invalid", "auth"),
    (421, "4.3.2 Service not available", "transient"),
    (451, "4.7.1 greylisted", "transient"),
    (599, "odd", "permanent"),
])
def test_smtp_replies_map_through_the_table(code: int, text: str, outcome: str) -> None:
    key, rule = classify(code, text)
    assert key in ERRORS and rule.outcome == outcome


# --- sending through the fake ----------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    fake = FakeSmtp(Provider("email"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.serve("127.0.0.1", 0), loop).result(10)
    try:
        yield fake
    finally:
        loop.call_soon_threadsafe(fake.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def channel_env(fake: FakeSmtp, **extra: str) -> dict[str, str]:
    assert fake.server is not None
    port = fake.server.sockets[0].getsockname()[1]
    return {"HERALD_EMAIL_BACKEND": "provider", "HERALD_EMAIL_SMTP_HOST": "127.0.0.1",
            "HERALD_EMAIL_SMTP_PORT": str(port), "HERALD_EMAIL_SMTP_TLS": "none",
            "HERALD_EMAIL_FROM_ADDRESS": "herald@example.com", "HERALD_EMAIL_SMTP_TIMEOUT_S": "2", **extra}


def test_the_fake_receives_the_email_and_refuses_as_told(smtp: FakeSmtp) -> None:
    smtp.provider.switches.dead_tokens.add("gone@example.com")
    smtp.provider.switches.errors["busy@example.com"] = "451"
    with herald_env(channel_env(smtp)):
        results = {r.delivery_id: r for r in EmailChannel().send(
            [message("ana@example.com", 1), message("gone@example.com", 2), message("busy@example.com", 3)])}
    assert results[1].outcome == "sent"
    assert (results[2].outcome, results[2].provider_status) == ("invalid_token", "550 5.1.1")
    assert results[3].outcome == "transient"
    [seen] = smtp.provider.seen
    assert seen["to"] == ["ana@example.com"] and seen["message_id"] == "<herald.d1@example.com>"
    assert f"{PAGE_URL}&action=acknowledge&token=k2.ack%2B%2F%3D" in seen["links"]


def test_a_refused_login_is_an_auth_failure_and_the_password_shows_nowhere(
        smtp: FakeSmtp, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # given a server that wants another password than herald's file holds
    smtp.logins["herald"] = "the-right-one"
    secret = tmp_path / "pw"
    secret.write_text(SECRET)
    caplog.set_level(logging.DEBUG)
    with herald_env(channel_env(smtp, HERALD_EMAIL_SMTP_USERNAME="herald",
                                HERALD_EMAIL_SMTP_PASSWORD_FILE=str(secret))):
        channel = EmailChannel()
        channel.alert_auth = lambda reason, count: None  # type: ignore[method-assign]  # no broker here
        [result] = channel.send([message()])
    # then the target is an auth failure (kept for a replay), and the secret is in no result and no log line
    assert result.outcome == "auth" and result.provider_status is not None
    assert result.provider_status.startswith("535")
    assert smtp.auth_failures >= 1 and not smtp.provider.seen  # aiosmtplib tries PLAIN, then LOGIN
    assert SECRET not in repr(result) and SECRET not in caplog.text


def test_an_unreadable_password_file_is_an_auth_failure_that_names_the_file_only(smtp: FakeSmtp, tmp_path: Path
                                                                                ) -> None:
    with herald_env(channel_env(smtp, HERALD_EMAIL_SMTP_USERNAME="herald",
                                HERALD_EMAIL_SMTP_PASSWORD_FILE=str(tmp_path / "missing"))):
        channel = EmailChannel()
        channel.alert_auth = lambda reason, count: None  # type: ignore[method-assign]
        [result] = channel.send([message()])
    assert result.outcome == "auth" and "missing" in (result.reason or "") and "FileNotFoundError" in (result.reason
                                                                                                    or "")


def test_a_server_that_answers_data_too_late_is_an_uncertain_send(smtp: FakeSmtp) -> None:
    smtp.provider.switches.hang_s["email"] = 3.0
    with herald_env(channel_env(smtp, HERALD_EMAIL_SMTP_TIMEOUT_S="0.5")):
        [result] = EmailChannel().send([message()])
    assert result.outcome == "uncertain" and len(smtp.provider.seen) == 1
