"""One e-mail for one message: plain text and a simple HTML part, with one https link per action.

The text is the notification's own (title as the subject, the body, the responder page). Each action the
notification offers (docs/actions.md) is a link to the responder page carrying the action and its token in
the URL fragment, which browsers never send to a server: no server log, no proxy, no referrer sees the token.

Every copy of one delivery carries the same ``Message-ID`` (``<herald.d<delivery id>@<from domain>>``), so a
resend after an uncertain send is recognisably the same e-mail; ``X-Herald-Collapse-Key`` carries the
notification's collapse key for mail filters, as the push channels carry it to phones.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from urllib.parse import quote

from herald.channels.types import Message

ACTION_TITLES = {"acknowledge": "Acknowledge", "resolve": "Resolve", "follow_up": "Request follow-up",
                 "approve": "Approve", "reject": "Reject", "request_info": "Ask for more information"}


def action_links(message: Message) -> list[tuple[str, str]]:
    """(label, url) per action, in the order offered: the responder page, told which answer to give."""
    url = message.payload.url
    if url is None:
        return []
    joiner = "&" if "#" in url else "#"
    return [(ACTION_TITLES.get(action, action.replace("_", " ").capitalize()),
             f"{url}{joiner}action={quote(action, safe='')}&token={quote(token, safe='')}")
            for action, token in message.payload.actions.items()]


def message_id(message: Message, sender: str) -> str:
    return f"<herald.d{message.target.delivery_id}@{sender.rpartition('@')[2]}>"


def text_body(message: Message, links: list[tuple[str, str]]) -> str:
    lines = [message.payload.body, ""]
    lines += [f"{label}: {url}" for label, url in links]
    if message.payload.url:
        lines.append(f"Open: {message.payload.url}")
    lines += ["", f"Severity: {message.severity}. Sent by herald because you are on its list for this page."]
    return "\n".join(lines).strip() + "\n"


def html_body(message: Message, links: list[tuple[str, str]]) -> str:
    e = html.escape
    body = "<br>\n".join(e(line) for line in message.payload.body.splitlines())
    buttons = "\n".join(f'<li><a href="{e(url)}">{e(label)}</a></li>' for label, url in links)
    page = f'<p><a href="{e(message.payload.url)}">Open in herald</a></p>' if message.payload.url else ""
    return (f"<!DOCTYPE html>\n<html><body>\n<h1 style=\"font-size:1.2em\">{e(message.payload.title)}</h1>\n"
            f"<p>{body}</p>\n" + (f"<ul>\n{buttons}\n</ul>\n" if buttons else "") + page
            + f"\n<p style=\"color:#666\">Severity: {e(message.severity)}.</p>\n</body></html>\n")


def build(message: Message, sender: str) -> EmailMessage:
    """The e-mail for one message (raises ValueError for a header herald cannot write)."""
    mail = EmailMessage(policy=SMTP)
    mail["From"] = sender
    mail["To"] = message.target.token
    mail["Subject"] = message.payload.title
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = message_id(message, sender)
    if message.collapse_key:
        mail["X-Herald-Collapse-Key"] = message.collapse_key
    if message.severity in ("critical", "error"):
        # Read by mail clients (Outlook, Thunderbird) as high importance.
        mail["Importance"] = "high"
        mail["X-Priority"] = "1"
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to herald
    links = action_links(message)
    mail.set_content(text_body(message, links))
    mail.add_alternative(html_body(message, links), subtype="html")
    return mail
