"""E-mail over SMTP: herald's fallback channel. The spec; the sender is in ``provider.py``, the message in
``message.py``, the address rows in ``addresses.py``.

Settings ``HERALD_EMAIL_*``. An e-mail's address is the person's ``email`` (the directory's ``people.email``),
kept as a device row of channel ``email`` whose token is the address (a delivery names a device), created on
demand by :func:`herald.channels.email.addresses.ensure` the first time herald e-mails the person.

Email is reached two ways only (docs/channels.md, "Email"): as the fallback of a page that reached nobody
(herald/unreached.py), and by a route that names ``email`` in its ``channels``. A route without ``channels``
reaches every device but these rows: the spec says ``named_only``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from herald.channels.sender import Rule
from herald.channels.spec import Addressing, ChannelSettings, ChannelSpec
from herald.channels.types import Channel
from herald.errors import InvalidDevice

NAME = "email"

# What herald stores and sends to: a plain addr-spec (RFC 5322 section 3.4.1, dot-atom local part, no quoted
# strings, no comments, no display name), 254 characters at most (RFC 5321 section 4.5.3.1.3 and its errata).
ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                     r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
MAX_ADDRESS_CHARS = 254


def address(value: Any) -> str:
    """An e-mail address as herald stores it (the domain lower-cased), or :class:`InvalidDevice`."""
    if not isinstance(value, str) or len(value) > MAX_ADDRESS_CHARS or not ADDRESS.fullmatch(value):
        raise InvalidDevice("an e-mail address is local@domain (letters, digits and . _ + - in the local part), "
                            f"{MAX_ADDRESS_CHARS} characters at most")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


class EmailSettings(ChannelSettings):
    """The SMTP server herald submits its e-mail to. The password is read from a file, never from the
    environment (a process's environment shows in ``ps e``, in crash reports and in task arguments)."""

    model_config = SettingsConfigDict(env_prefix="HERALD_EMAIL_", extra="ignore")

    max_in_flight: int = 10  # SMTP sessions at once, across every process (one per message)
    smtp_host: str = "localhost"
    smtp_port: int = 587
    # none: plain SMTP (a local relay); starttls: upgrade after EHLO (port 587, RFC 3207); tls: implicit TLS
    # from the first byte (port 465, RFC 8314)
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str = ""
    smtp_password_file: Path | None = None
    smtp_ca_file: Path | None = None  # an extra CA to trust; unset: the system's
    smtp_timeout_s: float | None = None  # each SMTP command, connect included; unset: HERALD_CHANNEL_TIMEOUT_S
    from_address: str = "herald@localhost"

    @field_validator("smtp_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 < value < 65536:
            raise ValueError("an SMTP port is 1 to 65535")
        return value

    @field_validator("smtp_timeout_s")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("the SMTP timeout must be positive (every network call has one)")
        return value

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str) -> str:
        try:
            return address(value)
        except InvalidDevice as exc:
            raise ValueError(f"HERALD_EMAIL_FROM_ADDRESS: {exc}") from None

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if bool(self.smtp_username) != (self.smtp_password_file is not None):
            raise ValueError("HERALD_EMAIL_SMTP_USERNAME and HERALD_EMAIL_SMTP_PASSWORD_FILE go together")
        if self.smtp_username and self.smtp_tls == "none" and not _loopback(self.smtp_host):
            raise ValueError("SMTP credentials are sent only over TLS (HERALD_EMAIL_SMTP_TLS=starttls or tls), "
                             "or to a relay on this machine")
        return self

    def timeout_s(self) -> float:
        """Each SMTP command's timeout: this channel's own, else every channel's (``HERALD_CHANNEL_TIMEOUT_S``)."""
        if self.smtp_timeout_s is not None:
            return self.smtp_timeout_s
        from herald.settings import get_settings

        return get_settings().channel_timeout_s

    def password(self) -> str | None:
        """The SMTP password, read from its file (its first line) when a session needs it."""
        if self.smtp_password_file is None:
            return None
        lines = self.smtp_password_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# SMTP replies (RFC 5321 section 4.2) and enhanced status codes (RFC 3463): the enhanced code decides
# when the server sends one, the reply code otherwise. Only a mailbox that does not exist deactivates the
# address; a policy refusal (5.7.x, spam filters) keeps it.
ERRORS: dict[str, Rule] = {
    "5.1.1": Rule("invalid_token", "no such mailbox: address deactivated"),
    "5.1.2": Rule("invalid_token", "no such domain: address deactivated"),
    "5.1.10": Rule("invalid_token", "the domain accepts no mail (null MX, RFC 7505): address deactivated"),
    "5.1.3": Rule("permanent", "the server refuses the address's syntax: address kept"),
    "5.7.8": Rule("auth", "SMTP credentials refused: address kept"),
    "5.7.0": Rule("permanent", "refused by the server's policy: address kept"),
    "535": Rule("auth", "SMTP authentication failed: address kept"),
    "530": Rule("auth", "the server requires authentication: set HERALD_EMAIL_SMTP_USERNAME"),
    "534": Rule("auth", "the server wants another authentication mechanism"),
    "538": Rule("auth", "the server requires TLS for authentication: set HERALD_EMAIL_SMTP_TLS"),
    "550": Rule("permanent", "mailbox unavailable or refused: address kept"),
    "552": Rule("permanent", "message too large for the server"),
    "554": Rule("permanent", "transaction failed: refused by the server"),
    "421": Rule("transient", "server closing the channel: retry with backoff"),
    "4xx": Rule("transient", "temporary failure (greylisting, mailbox busy): retry with backoff"),
    "5xx": Rule("permanent", "refused by the server"),
}


def check_address(value: Any, kind: str, app: str) -> str:
    return address(value)


def _provider() -> Channel:
    from herald.channels.email.provider import EmailChannel

    return EmailChannel()


SPEC = ChannelSpec(
    name=NAME, title="Email",
    addressing=Addressing("person", ("token",), check_address),
    settings=EmailSettings, errors=ERRORS, provider=_provider, named_only=True,
    preload="herald.channels.email.provider")
