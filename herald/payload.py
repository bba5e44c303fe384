"""What a notification says: title, body and deep link per event type, clean and within 4 KB.

The text is written for a lock screen: the title says where and what (``[prod] queue backlog:
edi-inbound``), the body what a person on call needs next (who, how much, until when), never a
repeat of the title; each flow's body is its entry in the per-flow table (herald/flows.py, the
text in herald/wording.py). Text that came from an event is cleaned first: control characters, terminal
escape sequences and bidi overrides never reach a phone (a U+202E can make ``exe.txt`` read as
``txt.exe``); a body keeps its line breaks, a title has none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from herald.events import EVENT_TYPES
from herald.flows import FLOWS
from herald.settings import get_settings

MAX_TITLE_CHARS = 200
MAX_BODY_CHARS = 1000
ELLIPSIS = "\u2026"

# --- cleaning ----------------------------------------------------------------------------------

# ANSI/ECMA-48 escape sequences whole (CSI "ESC [ ... m", OSC "ESC ] ... BEL", two-character escapes):
# dropping ESC alone would leave "[31m" on the screen.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_]?)")
# C0 and C1 controls (tab, LF and CR are handled apart), DEL, the bidi marks, embeddings, overrides and
# isolates (Unicode TR9), and the BOM. Zero-width joiners stay: emoji sequences need them.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_TITLE_SPACE = str.maketrans({"\t": " ", "\n": " ", "\r": " ", "\u2028": " ", "\u2029": " "})
_BODY_SPACE = str.maketrans({"\t": " ", "\r": "\n", "\u2028": "\n", "\u2029": "\n"})
_SPACES = re.compile(r" {2,}")
_BLANK_LINES = re.compile(r"\n[ \n]*\n")


def clean_title(text: str) -> str:
    """One line of visible text: controls, escapes and bidi controls removed, spaces collapsed."""
    if not (text.isascii() and text.isprintable()):
        text = _INVISIBLE.sub("", _ESCAPES.sub("", text).translate(_TITLE_SPACE))
    return _SPACES.sub(" ", text).strip() if "  " in text else text.strip()


def clean_body(text: str) -> str:
    """As :func:`clean_title`, but line breaks stay (at most one blank line in a row)."""
    if text.isascii() and text.isprintable():
        return _SPACES.sub(" ", text).strip() if "  " in text else text.strip()
    text = _INVISIBLE.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n")).translate(_BODY_SPACE))
    return _BLANK_LINES.sub("\n\n", _SPACES.sub(" ", text)).strip()


# --- cutting at a boundary a person sees as one -----------------------------------------------

def _joins(char: str) -> bool:
    """True for a character that belongs to the one before it (a cut must not fall before it)."""
    code = ord(char)
    return (0x300 <= code <= 0x36F or 0x1AB0 <= code <= 0x1AFF or 0x1DC0 <= code <= 0x1DFF
            or 0x20D0 <= code <= 0x20FF or 0xFE20 <= code <= 0xFE2F  # combining marks
            or code == 0x200D or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF  # ZWJ, selectors
            or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F)  # skin tones, emoji tags


def _boundary(text: str, end: int) -> int:
    """The largest cut <= ``end`` that does not split an accent, emoji sequence or flag."""
    while 0 < end < len(text) and (_joins(text[end]) or text[end - 1] == "\u200d"):
        end -= 1
    flags = 0  # a flag is a pair of regional indicators: never keep half of one
    while end - flags > 0 and "\U0001f1e6" <= text[end - flags - 1] <= "\U0001f1ff":
        flags += 1
    if flags % 2 and end < len(text) and "\U0001f1e6" <= text[end] <= "\U0001f1ff":
        end -= 1
    return end


def cut(text: str, chars: int) -> str:
    """``text`` in at most ``chars`` characters; a cut one ends with an ellipsis."""
    if len(text) <= chars:
        return text
    return text[:_boundary(text, chars - 1)].rstrip() + ELLIPSIS


def collapse_key(dedup_key: str | None, notification_id: int) -> str:
    """The collapse id / Topic of every copy of one notification, whatever the attempt.

    A resend after an uncertain send (workers/deliver/delivery.py) may reach a phone that already has
    the first copy; with the same collapse key FCM, APNs (apns-collapse-id) and Web Push (Topic)
    replace it rather than show two. An incident's dedup key is shared by the notifications of its
    later events (an escalation, a worse severity), which replace the earlier ones; any other
    notification collapses with its own copies only.
    """
    return dedup_key or f"herald-n{notification_id}"


def render(*, event_id: str, event_type: str, flow: str, environment: str, severity: str,
           data: dict[str, Any], notification_id: int, ids_only: bool,
           enrichment: dict[str, Any] | None = None) -> tuple[str, str, str, dict[str, str]]:
    """(title, body, link, data) for one notification."""
    link = f"herald://events/{event_id}?notification={notification_id}"
    ids = {"event_id": event_id, "notification_id": str(notification_id), "type": event_type}
    summary = EVENT_TYPES[event_type].summary
    if ids_only:
        # Sensitive business data stays on the server: the app fetches it when opened.
        return "You have a new notification", summary.capitalize(), link, ids
    change = event_type.partition(".")[2]
    spec = FLOWS[flow]  # what differs per flow: the field naming the subject, the body, an answer's headline
    name = data.get(spec.name_field, "") if spec.name_field else ""
    title = f"[{environment}] {summary}" + (f": {name}" if name else "")
    if spec.headline is not None:
        title = f"[{environment}] {spec.headline(change, data, enrichment or {})}"
    body = spec.body(change, data)
    return (cut(clean_title(title), MAX_TITLE_CHARS), cut(clean_body(body), MAX_BODY_CHARS), link,
            {**ids, "severity": severity})


def responder_url(notification_id: int) -> str:
    """The https page (``HERALD_PUBLIC_URL``) where a notification's recipient sees it and answers it."""
    return f"{get_settings().public_url.rstrip('/')}/app/#n={notification_id}"


# --- size limits -----------------------------------------------------------------------------

# Every provider caps one notification at 4 KB: APNs 4096 bytes of JSON, FCM 4096 bytes of
# notification + data, Web Push 4096 bytes of encrypted body (RFC 8291 section 4: 86 bytes of
# header and 17 of tag and padding delimiter leave 3993 bytes of clear text). Sizes are UTF-8 bytes
# of what is sent: channels encode JSON with ensure_ascii=False, since an escaped emoji
# ("\ud83d\ude00", 12 bytes) would cost three times its 4 bytes of UTF-8.
MAX_PAYLOAD_BYTES = 4096


class PayloadTooLarge(ValueError):
    """Even with the body and title cut down, the payload exceeds the provider's limit."""


def _prefix(text: str, chars: int) -> str:
    kept = text[:_boundary(text, chars)].rstrip()
    return kept + ELLIPSIS if kept else ""


def _longest(encode: Callable[[str], bytes], text: str, limit: int) -> bytes | None:
    """The encoding of the longest cut of ``text`` that fits; None when not even an empty text does."""
    empty = encode("")
    if len(empty) > limit:
        return None
    # JSON never encodes a character in fewer bytes than UTF-8 does, so the characters whose UTF-8
    # fits the room left are an upper bound: usually the first try fits, and a search is rare.
    room = limit - len(empty) - len(ELLIPSIS.encode())
    high = len(text.encode()[:max(room, 0)].decode("utf-8", "ignore"))
    if high and len(first := encode(_prefix(text, high))) <= limit:
        return first
    best, low, high = empty, 1, high - 1
    while low <= high:  # the longest prefix that fits
        mid = (low + high) // 2
        candidate = encode(_prefix(text, mid))
        if len(candidate) <= limit:
            best, low = candidate, mid + 1
        else:
            high = mid - 1
    return best


def fit(encode: Callable[[str, str], bytes], title: str, body: str, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The encoded payload within ``limit`` bytes, trimmed predictably.

    The body is cut first (at a character boundary, never inside an emoji sequence, ending with an
    ellipsis), then the title; what remains (link, ids, data) is never cut, since the app needs it
    whole: if that alone is too large, :class:`PayloadTooLarge` says so with the sizes. The common
    case, a payload that fits, costs one encoding.
    """
    encoded = encode(title, body)
    if len(encoded) <= limit:
        return encoded
    trimmed = _longest(lambda cut: encode(title, cut), body, limit)  # the title whole, the body cut
    if trimmed is None:
        trimmed = _longest(lambda cut: encode(cut, ""), title, limit)  # no body, the title cut
    if trimmed is not None:
        return trimmed
    raise PayloadTooLarge(f"payload is {len(encoded)} bytes, limit {limit}, and {len(encode('', ''))} "
                          f"bytes remain without title and body")
