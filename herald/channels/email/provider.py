"""SMTP submission with aiosmtplib: one SMTP session per message, within the channel's in-flight limit.

E-mail is the fallback channel: a handful of messages when pages reach nobody, so a session per message
(connect, EHLO, STARTTLS or implicit TLS, AUTH, MAIL, RCPT, DATA, QUIT) is simpler than a pool and
leaves no idle connection for a server to drop. Every command has ``HERALD_EMAIL_SMTP_TIMEOUT_S`` (default:
``HERALD_CHANNEL_TIMEOUT_S``).

Reply codes map to outcomes through the table in ``__init__`` (enhanced status codes first, RFC 3463).
A failure before DATA means the message never left (transient); no answer once DATA was under way means
the server may have taken it (uncertain), as for the push channels. The password is read from its file
when a session needs it and never appears in a result, a log line or an exception herald keeps.
"""

from __future__ import annotations

import re
import ssl
import time

import aiosmtplib

from herald.channels.email import ERRORS, NAME, EmailSettings
from herald.channels.email.message import build
from herald.channels.sender import ProviderChannel, Rule, apply_rule, connection_failed, provider_text, with_latency
from herald.channels.types import Message, Result

ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def classify(code: int, text: str) -> tuple[str, Rule]:
    """(key, rule) for an SMTP reply herald did not want: its enhanced code, else its reply code, else its class."""
    match = ENHANCED.match(text or "")
    if match and match.group(1) in ERRORS:
        return match.group(1), ERRORS[match.group(1)]
    if str(code) in ERRORS:
        return str(code), ERRORS[str(code)]
    return ("4xx", ERRORS["4xx"]) if 400 <= code < 500 else ("5xx", ERRORS["5xx"])


class EmailChannel(ProviderChannel):
    name = NAME

    def __init__(self) -> None:
        super().__init__()
        self.settings = EmailSettings.current()
        self._tls: ssl.SSLContext | None = None

    def _client(self, password: str | None) -> aiosmtplib.SMTP:
        s = self.settings
        if s.smtp_tls != "none" and self._tls is None:
            self._tls = ssl.create_default_context(cafile=str(s.smtp_ca_file) if s.smtp_ca_file else None)
        return aiosmtplib.SMTP(hostname=s.smtp_host, port=s.smtp_port, timeout=s.timeout_s(),
                               use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls",
                               tls_context=self._tls if s.smtp_tls != "none" else None,
                               username=s.smtp_username or None, password=password)

    async def send_one(self, message: Message) -> tuple[Result, Rule | None]:
        did = message.target.delivery_id
        started = time.perf_counter()
        try:
            mail = build(message, self.settings.from_address)
            data = mail.as_bytes()
        except (ValueError, TypeError) as exc:
            return Result(did, "permanent", None, provider_text(f"e-mail not built: {exc}", 500)), None
        try:
            password = self.settings.password()
        except (OSError, UnicodeDecodeError) as exc:
            # The file's name and the error's kind only: never its content.
            return Result(did, "auth", None, f"SMTP password file {self.settings.smtp_password_file} unreadable: "
                                             f"{type(exc).__name__}"), None
        client = self._client(password)
        sent = False  # DATA under way: the server may take the message even if its answer never comes
        try:
            await client.connect()
            await client.mail(self.settings.from_address)
            await client.rcpt(message.target.token)
            sent = True
            await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            key, rule = classify(exc.code, exc.message)
            return with_latency(apply_rule(rule, did, f"{exc.code} {key}", f"{exc.code} {exc.message}", 0, None),
                                started), rule
        except aiosmtplib.SMTPNotSupported as exc:  # herald's settings ask for what the server lacks
            return Result(did, "auth", None, provider_text(f"SMTP server: {exc} (check HERALD_EMAIL_SMTP_TLS)",
                                                           500)), None
        except (aiosmtplib.SMTPException, OSError) as exc:
            return connection_failed(did, exc, started, sent=sent), None
        finally:
            await _quit(client)
        return with_latency(Result(did, "sent", "250", None), started), None


async def _quit(client: aiosmtplib.SMTP) -> None:
    """QUIT politely; a server that is gone is simply closed."""
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()
