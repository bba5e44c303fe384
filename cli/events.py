"""``herald publish`` and ``herald events list|show``: send an event, then trace it."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cli.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE, Json, fail, out, print_json
from herald.errors import BrokerUnavailable, InvalidEvent

events_app = typer.Typer(help="Trace events.", no_args_is_help=True)

EVENT_PREFIX_MIN = 4


def publish(
    type: Annotated[str, typer.Argument(help="Event type, for example artifact.deployed.")],
    data: Annotated[str, typer.Option(help="The event's data as a JSON object.")],
    environment: Annotated[str, typer.Option(help="dev, test, prod (HERALD_ENVIRONMENTS).")] = "dev",
    idempotency_key: Annotated[str | None, typer.Option(help="Same key twice = one event.")] = None,
    severity: Annotated[str | None, typer.Option(help="info, warning, error, critical.")] = None,
    subject: Annotated[str | None, typer.Option(help="What the event is about.")] = None,
    source: Annotated[str, typer.Option(help="Who sends it.")] = "cli/main",
) -> None:
    """Publish one event to the broker and print its id.

    Event types: artifact.deployed|updated|retired, flow.failed|retry_exhausted|credential_error|recovered,
    approval.requested, business.order_submitted|shipment_status|invoice_posted|partner_onboarding,
    credential.expiring|expired, ops.queue_backlog|processing_delayed|sla_breached (and *_cleared),
    response.acknowledged|resolved|follow_up_requested|approved|rejected|info_requested.

    Examples:

        herald publish artifact.deployed --environment test --data '{"artifact": "orders-api", "kind": "api"}'

        herald publish flow.failed --environment prod --idempotency-key run-8812 --data '{"flow": "orders-to-erp"}'
    """
    from herald.events import validate_event
    from herald.publishing import send_envelope

    fields = {"type": type, "data": _json_object(data), "environment": environment, "source": source,
              "idempotency_key": idempotency_key, "severity": severity, "subject": subject}
    try:
        event = validate_event({k: v for k, v in fields.items() if v is not None})
        send_envelope(event.to_json())
    except InvalidEvent as exc:
        fail(EXIT_BAD_INPUT, f"invalid event: {exc}")
    except BrokerUnavailable as exc:
        fail(EXIT_UNAVAILABLE, str(exc))
    out.print(str(event.id), markup=False, highlight=False)


def _json_object(data: str) -> dict[str, Any]:
    """``--data`` parsed, or exit 2 with why it is not a JSON object."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        fail(EXIT_BAD_INPUT, f"--data is not valid JSON: {exc.msg} at character {exc.pos}")
    except RecursionError:  # the json parser recurses: deep nesting is refused here, as validation would
        fail(EXIT_BAD_INPUT, "--data is nested too deeply")
    if not isinstance(payload, dict):
        fail(EXIT_BAD_INPUT, "--data must be a JSON object")
    return payload


def _event_id(text: str) -> uuid.UUID:
    """A whole event id, or the one event whose id starts with ``text``; exit 2 or 1 otherwise."""
    from sqlalchemy import String, cast, select

    from herald import db
    from herald.models import EventRow

    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    prefix = text.strip().lower()
    if len(prefix) < EVENT_PREFIX_MIN or len(prefix) > 36 or prefix.strip("0123456789abcdef-"):
        fail(EXIT_BAD_INPUT, f"not an event id or a prefix of one (at least {EVENT_PREFIX_MIN} hex digits): "
                             f"{text[:40]!r}")
    with db.session() as s:
        # Postgres prints a uuid with dashes; SQLite stores its 32 hex digits without them.
        pattern = prefix if db.is_postgres() else prefix.replace("-", "")
        ids = list(s.scalars(select(EventRow.id).where(cast(EventRow.id, String).like(pattern + "%")).limit(6)))
    if not ids:
        fail(EXIT_FAILED, f"no event id starts with {prefix} (it may not be ingested yet)")
    if len(ids) > 1:
        shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
        fail(EXIT_BAD_INPUT, f"{prefix} is the start of {'more than 5' if len(ids) > 5 else len(ids)} event ids "
                             f"({shown}): give more of it")
    return ids[0]


@events_app.command("show")
def events_show(
    event_id: Annotated[str, typer.Argument(help="The event id publish printed, or a unique prefix of it "
                                                 "(at least 4 characters).")],
    as_json: Json = False,
) -> None:
    """Show an event with its notifications and every delivery attempt.

    Exits 2 when the id is malformed or a prefix matches several events, 1 when no event has it.

    Examples:

        herald events show 3c497f8a-b981-4e8c-b492-503867d47d15 --json

        herald events show 3c497f8a
    """
    from herald.trace import trace

    key = _event_id(event_id)
    found = trace(key)
    if found is None:
        fail(EXIT_FAILED, f"no event {key} (it may not be ingested yet)")
    if as_json:
        print_json(found)
    else:
        _print_trace(found)


def _print_trace(found: dict[str, Any]) -> None:
    ev = found["event"]
    out.print(Text.assemble((ev["type"], "bold"), f" {ev['id']}  env={ev['environment']} "
                            f"severity={ev['severity']} status={ev['status']}"))
    out.print(f"  source={ev['source']} at={ev['occurred_at']} key={ev['idempotency_key']}")
    out.print(f"  data={json.dumps(ev['data'])}", markup=False)
    if found.get("incident"):
        out.print(f"  incident={json.dumps(found['incident'], default=str)}", markup=False)
    if found.get("approval"):
        out.print(f"  approval={json.dumps(found['approval'], default=str)}", markup=False)
    table = Table("notification", "person", "why", "status", "device", "delivery", "attempts")
    for n in found["notifications"]:
        if not n["deliveries"]:
            table.add_row(str(n["id"]), n["person_id"], n["reason"], f"{n['status']} {n['status_reason'] or ''}",
                          "-", "-", "-")
        for d in n["deliveries"]:
            tries = "; ".join(f"#{a['attempt']} {a['outcome']}{' (resend)' if a['resend'] else ''}"
                              f"{' ' + a['reason'] if a['reason'] else ''}" for a in d["attempts"])
            table.add_row(str(n["id"]), n["person_id"], n["reason"], n["status"],
                          f"{d['channel']}#{d['device_id']}", d["status"], tries or "-")
    out.print(table)


@events_app.command("list")
def events_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Json = False,
) -> None:
    """List the newest events, with their whole ids (`herald events show` takes one, or a unique prefix).

    Example:

        herald events list --limit 5
    """
    from herald.trace import recent

    rows = recent(limit)
    if as_json:
        print_json(rows)
        return
    table = Table()
    # the id is never cut (a cut id is useless): it folds onto a second line rather than lose a character
    table.add_column("id", no_wrap=True, overflow="fold", min_width=36)
    for name in ("type", "environment", "severity", "status", "received"):
        table.add_column(name)
    for r in rows:
        table.add_row(r["id"], r["type"], r["environment"], r["severity"], r["status"], r["received_at"])
    out.print(table)
