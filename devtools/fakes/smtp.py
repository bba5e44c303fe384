"""A fake SMTP server (aiosmtpd) that records every e-mail it accepts, with the fakes' switches.

It speaks real SMTP (EHLO, MAIL, RCPT, DATA, QUIT), so herald's e-mail channel runs its real client
against it. The switches of its :class:`~devtools.fakes.state.Provider` (``herald fakes``' control API,
``POST <control>/switches/email``) make it refuse as mail servers do:

- ``dead_tokens``: addresses answered ``550 5.1.1`` at RCPT (no such mailbox: herald deactivates the address);
- ``errors``: address -> a reply (a key of :data:`REPLIES`, e.g. ``"451"``, ``"5.1.1"``, ``"535"``, or a whole
  reply line ``"550 5.7.1 spam"``), ``"KEY*N"`` for the next N messages only;
- ``outage_s``: ``421 4.3.2`` to every RCPT; ``throttle``: the next N get ``451 4.7.1``; ``error_rate``: ``451``;
- ``hang_s`` (``{"email": 30}``): the message is taken whole, recorded, and answered that late (an uncertain send);
- ``refused`` (``["email"]``): the server stops listening and drops its connections (devtools/fakes/server.py);
- ``latency_ms``: added before the answer to DATA;
- ``FakeSmtp.logins`` (user -> password): when set, AUTH is required and checked (``535 5.7.8`` otherwise).

Each accepted message is one entry of ``seen``: sender, recipients, subject, ``message_id``, collapse key, the
plain text and the HTML, and the https links the text carries (``links``).
"""

from __future__ import annotations

import asyncio
import re
import warnings
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from devtools.fakes.state import Provider

NAME = "email"

# Replies by key, as mail servers write them (RFC 5321 section 4.2, RFC 3463 enhanced codes).
REPLIES: dict[str, str] = {
    "5.1.1": "550 5.1.1 <{to}>: Recipient address rejected: User unknown",
    "5.1.2": "550 5.1.2 <{to}>: Recipient address rejected: Domain not found",
    "550": "550 5.7.1 <{to}>: Message rejected by policy",
    "552": "552 5.3.4 Message size exceeds fixed limit",
    "554": "554 5.7.1 Transaction failed",
    "421": "421 4.3.2 Service not available, closing transmission channel",
    "451": "451 4.3.0 Temporary failure, try again later",
    "452": "452 4.2.2 Mailbox full",
    "535": "535 5.7.8 Authentication credentials invalid",
}
LINK = re.compile(r"https?://\S+")


def reply(key: str, to: str) -> str:
    """The reply line for a forced error: a key of :data:`REPLIES`, or a whole reply given as is."""
    return REPLIES[key].format(to=to) if key in REPLIES else key


class FakeSmtp:
    """The handler aiosmtpd calls, and the server it runs (:meth:`serve`)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        # user -> password: when set, AUTH (PLAIN or LOGIN, over plain text: it is a local fake) is required
        self.logins: dict[str, str] = {}
        self.auth_failures = 0
        self.server: asyncio.Server | None = None
        self.live: set[asyncio.BaseTransport] = set()

    # --- aiosmtpd handler hooks ------------------------------------------------------------

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.provider.switches.dead_tokens:
            return reply("5.1.1", address)
        forced = self.provider.forced(address)
        if forced is not None:
            return reply(forced, address)
        trouble = self.provider.trouble()
        if trouble is not None:
            return {"outage": reply("421", address), "throttle": "451 4.7.1 Too many messages, slow down",
                    "error": reply("451", address)}[trouble]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        provider = self.provider
        provider.enter()
        try:
            provider.record(**self._entry(envelope))
            hang = provider.switches.hang_s.get(NAME, 0.0)
            wait = hang + provider.switches.latency_ms / 1000
            if wait:
                await asyncio.sleep(wait)
            return "250 2.0.0 Message accepted for delivery"
        finally:
            provider.leave()

    @staticmethod
    def _entry(envelope: Envelope) -> dict[str, Any]:
        raw = envelope.original_content or envelope.content or b""
        mail = message_from_bytes(raw if isinstance(raw, bytes) else raw.encode(), policy=default)
        assert isinstance(mail, EmailMessage)
        text = mail.get_body(("plain",))
        html = mail.get_body(("html",))
        plain = text.get_content().replace("\r\n", "\n") if text is not None else ""
        return {"status": 250, "mail_from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                "subject": str(mail["Subject"]), "message_id": str(mail["Message-ID"]),
                "collapse_key": mail["X-Herald-Collapse-Key"], "importance": mail["Importance"], "text": plain,
                "html": html.get_content() if html is not None else "", "links": LINK.findall(plain)}

    # --- the server ------------------------------------------------------------------------

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.logins.get(auth_data.login.decode()) == \
                auth_data.password.decode():
            return AuthResult(success=True)
        self.auth_failures += 1
        return AuthResult(success=False, handled=False)

    def _protocol(self) -> SMTP:
        with warnings.catch_warnings():  # AUTH without TLS: a local fake, on loopback, on purpose
            warnings.simplefilter("ignore", UserWarning)
            return _Tracked(self, hostname="fake-smtp.local", ident="herald fake SMTP",
                            authenticator=self._authenticate, auth_required=bool(self.logins), auth_require_tls=False)

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Listen (again) on ``host:port`` (0: any free port)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, host, port, backlog=256)
        return self.server

    def close(self) -> None:
        """Stop listening and drop every open session (a server that is gone)."""
        if self.server is not None:
            self.server.close()
        for transport in list(self.live):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            else:
                transport.close()
        self.live.clear()


class _Tracked(SMTP):
    """aiosmtpd's SMTP session, remembered while its connection is open (so a refused switch can drop it)."""

    def __init__(self, fake: FakeSmtp, **kwargs: Any) -> None:
        super().__init__(fake, **kwargs)
        self._fake = fake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._fake.live.add(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.transport is not None:
            self._fake.live.discard(self.transport)
        super().connection_lost(error)
