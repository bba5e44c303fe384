"""The dead-letter table: work that cannot go on by itself, kept with its reason, replayable.

Writing a dead letter must not fail on what it keeps. Postgres refuses a NUL character in
``text`` and ``\\u0000`` (or a lone surrogate, or NaN) in ``jsonb``, and a message that reached
the dead-letter path is exactly the kind that may hold them. So :func:`record` stores:

- ``ref`` as JSON when Postgres can store it; otherwise ``ref`` is ``{"stored_in_body": "json"}``
  and ``body`` holds ``{"ref": ..., "body": ...}`` as ASCII JSON text (``\\u0000`` escaped), which
  replay decodes again;
- a raw message body as text when it is UTF-8 with no NUL; otherwise base64, said in
  ``ref["body_encoding"]``;
- reason, task name and queue with any NUL or lone surrogate escaped (``\\x00``).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.orm import Session

from herald import db
from herald.models import DeadLetter, Delivery, EventRow, UTCDateTime, utcnow

log = logging.getLogger(__name__)

# Beyond this a raw body is cut (its full length is kept in ``ref["body_chars"]``). Far above any
# event herald accepts (HERALD_MAX_EVENT_BYTES), so a real message is kept whole.
BODY_LIMIT = 1_000_000
STORED_IN_BODY = "stored_in_body"


def _text(value: str) -> str:
    """What Postgres ``text`` can hold: NUL and lone surrogates escaped, everything else as is."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def storable_json(value: Any) -> bool:
    """True when ``value`` goes into a ``jsonb`` column unchanged: plain JSON, no NUL, no lone surrogate, no NaN."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError):  # not JSON, NaN/inf, or a lone surrogate (UnicodeEncodeError)
        return False
    return "\\u0000" not in text  # json.dumps escapes NUL; a literal "\\u0000" is refused too, harmlessly


def _body(raw: str | bytes | None) -> tuple[str | None, dict[str, Any]]:
    """A raw body as storable text, and what ``ref`` must say about how it was stored."""
    if raw is None:
        return None, {}
    note: dict[str, Any] = {}
    if isinstance(raw, str):
        if storable_json(raw):
            text = raw
        else:
            text, note = base64.b64encode(raw.encode("utf-8", "surrogatepass")).decode(), {"body_encoding": "base64"}
    else:
        try:
            text = bytes(raw).decode("utf-8")
            if "\x00" in text:
                raise ValueError("NUL")
        except ValueError:  # UnicodeDecodeError included
            text, note = base64.b64encode(bytes(raw)).decode(), {"body_encoding": "base64"}
    if len(text) > BODY_LIMIT:
        note["body_chars"] = len(text)
        text = text[:BODY_LIMIT]
    return text, note


def _storable(ref: dict[str, Any], body: str | bytes | None) -> tuple[dict[str, Any], str | None]:
    text, note = _body(body)
    if storable_json(ref):
        return {**ref, **note}, text
    # What jsonb refuses goes whole into the text column as ASCII JSON (\u0000 is six plain characters).
    kept = json.dumps({"ref": ref, "body": text}, ensure_ascii=True, default=repr)
    return {STORED_IN_BODY: "json", **note}, kept


def record(kind: str, reason: str, *, task_name: str | None = None, queue: str | None = None,
           ref: dict[str, Any] | None = None, body: str | bytes | None = None,
           session: Session | None = None) -> int:
    """Write one dead letter and return its id: in its own transaction, or in ``session`` when given.

    Raises only when the database itself fails (then the caller must not acknowledge its message).
    """
    stored_ref, stored_body = _storable(ref or {}, body)
    row = DeadLetter(kind=_text(kind), reason=_text(reason)[:4000],
                     task_name=_text(task_name)[:128] if task_name else None,
                     queue=_text(queue)[:64] if queue else None, ref=stored_ref, body=stored_body)
    if session is not None:
        session.add(row)
        session.flush()
    else:
        with db.session() as s:
            s.add(row)
            s.flush()
    log.error("dead letter %s: %s %s: %s", row.id, row.kind, row.task_name or "", row.reason,
              extra={"dead_letter_id": row.id, "task_name": row.task_name})
    return row.id


def original_ref(row: DeadLetter) -> dict[str, Any]:
    """The ref as it was given to :func:`record` (decoded from the body when jsonb could not hold it)."""
    if row.ref.get(STORED_IN_BODY) == "json" and row.body:
        kept = json.loads(row.body)
        return dict(kept.get("ref") or {})
    return dict(row.ref)


def open_counts(s: Session) -> dict[str, int]:
    """Dead letters not replayed yet, by kind (``herald status``, the ``dead_letters`` condition)."""
    found = s.execute(select(DeadLetter.kind, func.count()).where(DeadLetter.replayed_at.is_(None))
                      .group_by(DeadLetter.kind)).all()
    return {kind: n for kind, n in found}


def _reset_dead_targets(s: Session, delivery_ids: Iterable[int]) -> list[tuple[str, str]]:
    """Put the dead targets among ``delivery_ids`` back to pending; return their (channel, batch) pairs.

    Only ``dead`` targets: one already ``sent`` (by an earlier replay, say) is never sent again, and
    one ``pending`` or ``sending`` is already on its way. Each gets a fresh deadline for its severity.
    """
    from herald.events import Severity
    from herald.taskbase import deliver_by  # herald.taskbase imports this module

    now = utcnow()
    severity = select(EventRow.severity).where(EventRow.id == Delivery.event_id).scalar_subquery()
    by = {level.value: literal(deliver_by(level.value, now), UTCDateTime()) for level in Severity}
    fresh = case(*((severity == level, until) for level, until in by.items()), else_=by[Severity.info.value])
    reset = s.execute(update(Delivery).where(Delivery.id.in_(list(delivery_ids)), Delivery.status == "dead")
                      .values(status="pending", attempts=0, due_at=now, updated_at=now, deliver_by=fresh)
                      .returning(Delivery.channel, Delivery.batch_id)).all()
    return sorted({(channel, str(batch)) for channel, batch in reset})


def replay(ids: list[int] | None = None, *, include_replayed: bool = False) -> list[int]:
    """Send dead letters back into the pipeline; returns the ids replayed.

    Task dead letters are re-sent with their original (id-only) arguments, and the task runs every
    check again; delivery dead letters put their targets that are still ``dead`` back to pending and
    re-enqueue their batches (a target already sent stays sent). Malformed messages have nothing to
    replay and are skipped.
    """
    from herald.app import app
    from herald.lanes import TASK_ROUTES

    replayed: list[int] = []
    sends: list[tuple[str, list[Any]]] = []
    with db.session() as s:
        query = select(DeadLetter).order_by(DeadLetter.id)
        if ids:
            query = query.where(DeadLetter.id.in_(ids))
        elif not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        for row in s.scalars(query.with_for_update()):
            ref = original_ref(row)
            if row.kind == "delivery":
                batches = _reset_dead_targets(s, ref.get("delivery_ids", []))
                sends += [(f"herald.deliver.{ch}", [batch]) for ch, batch in batches]
            elif row.kind == "task" and row.task_name in TASK_ROUTES and "args" in ref:
                sends.append((row.task_name, list(ref["args"])))
            else:
                continue
            row.replayed_at = utcnow()
            row.replay_count += 1
            replayed.append(row.id)
    # Enqueue only after commit: a worker must find the rows already reset.
    for name, args in sends:
        app.send_task(name, args=args)
    return replayed


def dismiss(ids: list[int]) -> list[int]:
    """Close open dead letters without replaying them; returns the ids closed.

    Closed is what replayed means to ``herald status`` (``replayed_at`` set); ``replay_count`` stays
    as it was, so ``herald deadletters list --all`` tells a dismissed one from a replayed one.
    """
    with db.session() as s:
        closed = s.scalars(update(DeadLetter).where(DeadLetter.id.in_(ids), DeadLetter.replayed_at.is_(None))
                           .values(replayed_at=utcnow()).returning(DeadLetter.id)).all()
    return sorted(closed)
