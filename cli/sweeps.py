"""``herald sweep recover|outbox|credentials|backlog|due|purge`` and ``herald status``.

``herald status`` exits 1 when something needs a person (schedules.status.needs_a_person: a dead letter open,
a sweep overdue or failed, a pool down, a queue older than its threshold, a circuit open, a page unreached, an
operations condition raised); cli.output has every exit code.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from cli.output import EXIT_FAILED, Json, out, print_json

sweep_app = typer.Typer(help="Run a periodic sweep now.", no_args_is_help=True)


def _report(name: str, summary: dict[str, Any] | None, as_json: bool) -> None:
    if summary is None:
        if as_json:
            print_json({"skipped": True})
        else:
            out.print(f"{name}: skipped, another run holds the lock")
        return
    if as_json:
        print_json(summary)
    else:
        out.print(json.dumps(summary, default=str), markup=False, highlight=False)


@sweep_app.command("credentials")
def sweep_credentials(as_json: Json = False) -> None:
    """Rescan the credential inventory and notify each newly crossed threshold once (beat runs this hourly).

    Example:

        herald sweep credentials --json
    """
    from schedules.expiry import sweep_credentials as run

    _report("credentials", run(), as_json)


@sweep_app.command("backlog")
def sweep_backlog(as_json: Json = False) -> None:
    """Measure queue depth and age and per-flow time to delivery; raise or clear conditions once.

    Example:

        herald sweep backlog --json | jq .queues
    """
    from schedules.backlog import scan_backlog

    _report("backlog", scan_backlog(), as_json)


@sweep_app.command("due")
def sweep_due(as_json: Json = False) -> None:
    """Run the timed work that is due now (escalation steps...), as the beat tick does.

    Example:

        herald sweep due
    """
    from schedules.due import tick_recorded

    _report("due", tick_recorded(), as_json)


@sweep_app.command("escalations")
def sweep_escalations(as_json: Json = False) -> None:
    """The escalation auditor: run the overdue chain step of every open incident (docs/sweeps.md).

    Example:

        herald sweep escalations --json
    """
    from schedules.escalations import sweep_escalations as run

    _report("escalations", run(), as_json)


@sweep_app.command("approvals")
def sweep_approvals(as_json: Json = False) -> None:
    """Close the pending approvals past their expiry (fail closed), write it back, tell the requester.

    Example:

        herald sweep approvals --json
    """
    from schedules.approvals import sweep_approvals as run

    _report("approvals", run(), as_json)


@sweep_app.command("purge")
def sweep_purge(as_json: Json = False) -> None:
    """Delete events, attempts, audit rows and plumbing older than their retention (HERALD_RETAIN_*).

    Example:

        HERALD_RETAIN_EVENTS_DAYS=30 herald sweep purge
    """
    from schedules.purge import purge

    _report("purge", purge(), as_json)


@sweep_app.command("recover")
def sweep_recover() -> None:
    """Re-enqueue work whose rows stalled past HERALD_STALL_DEADLINE_S (beat runs this on its period).

    Example (after a Redis restart, without waiting for beat):

        herald sweep recover
    """
    from schedules.recover import recover_stalled

    out.print(json.dumps(recover_stalled()))


@sweep_app.command("outbox")
def sweep_outbox() -> None:
    """Relay outbox rows left behind (beat runs this on its period).

    Example:

        herald sweep outbox
    """
    from herald.outbox import relay

    out.print(f"relayed {relay()} outbox row(s)")


# --- herald status ------------------------------------------------------------------------------


def _ago(iso: str | None, now: datetime) -> str:
    if iso is None:
        return "never"
    seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _last_success(row: dict[str, Any], now: datetime) -> str:
    if row["not_yet_due"]:
        return "never (not yet due)"
    return _ago(row["last_ok_at"], now)


def status(as_json: Json = False) -> None:
    """What needs a person now, then each sweep, worker pool, queue, provider circuit, raised operations
    condition, open dead letter, page that reached nobody, and the credentials expiring soonest.

    The first line says what needs a person (or that nothing does). Exits 1 when something does: a dead
    letter is open (`herald deadletters list` shows them, `replay` retries them, `dismiss` closes them), a
    sweep is overdue (no success within twice its period; a sweep whose first period since beat, or the
    stack, started has not passed is "not yet due", not overdue) or its last run failed, a pool is down
    (it had workers and none has sent a heartbeat within HERALD_HEARTBEAT_TIMEOUT_S; a pool no worker
    ever ran is "not seen"), a queue's oldest message is older than HERALD_BACKLOG_AGE_THRESHOLD_S or the
    broker cannot be read, a provider's circuit is open, a page reached nobody, an operations condition
    is raised (queue backlog, processing delayed, SLA breached...), or a credential still in use has expired
    (renew it, or `herald credentials retire` one nobody uses).

    Examples:

        herald status

        herald status --json | jq .attention

        herald status --json | jq '.sweeps[] | select(.overdue)'

        herald status --json | jq '.queues.rows[] | select(.depth > 0)'

        herald status --json | jq .dead_letters
    """
    from herald.models import utcnow
    from schedules import status as status_module

    now = utcnow()
    body = status_module.report(now)
    if as_json:
        print_json(body)
    else:
        _print_attention(body["attention"])
        _print_sweeps(body["sweeps"], now)
        _print_pools(body["pools"], now)
        _print_queues(body["queues"])
        _print_circuits(body["circuits"])
        _print_conditions(body["raised"])
        _print_dead_letters(body["dead_letters"])
        _print_unreached(body["unreached_pages"])
        _print_credentials(body["credentials"])
    if body["attention"]:
        raise typer.Exit(EXIT_FAILED)


def _print_attention(attention: list[str]) -> None:
    if not attention:
        out.print(Text("nothing needs a person", style="green"))
        return
    out.print(Text(f"needs a person ({len(attention)}):", style="bold red"))
    for line in attention:
        out.print(Text(f"  - {line}"))


def _print_sweeps(sweeps: list[dict[str, Any]], now: datetime) -> None:
    table = Table("sweep", "every", "last success", "last run", "overdue")
    for row in sweeps:
        outcome = row["last_outcome"] or "-"
        if row["last_error"] and outcome == "failed":
            outcome = f"failed: {row['last_error']}"
        table.add_row(row["sweep"], f"{row['period_s']:g}s", _last_success(row, now), outcome,
                      Text("yes", style="red") if row["overdue"] else "no")
    out.print(table)


def _print_pools(pools: list[dict[str, Any]], now: datetime) -> None:
    table = Table("pool", "state", "live workers", "last heartbeat")
    for p in pools:
        state: str | Text = p["state"]
        if p["state"] == "down":  # the last worker stopped (warm shutdown) or went silent (killed, hung)
            state = Text(f"down ({p['last_worker']})", style="red")
        workers = ", ".join(w["node"] for w in p["workers"]) or "-"
        table.add_row(p["pool"], state, workers, _ago(p["last_seen"], now))
    out.print(table)


def _print_conditions(raised: list[dict[str, Any]]) -> None:
    if not raised:
        out.print("no operations condition raised")
        return
    conditions = Table("raised condition", "resource", "value", "threshold", "since")
    for c in raised:
        conditions.add_row(c["condition"], c["resource"], f"{c['value']:g}" if c["value"] is not None else "-",
                           f"{c['threshold']:g}", c["raised_at"] or "-")
    out.print(conditions)


def _print_dead_letters(dead: dict[str, Any]) -> None:
    if not dead["open"]:
        out.print("no open dead letter")
        return
    by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(dead["by_kind"].items()))
    targets = f"; {dead['targets']} delivery target(s) in them" if dead["targets"] else ""
    out.print(f"open dead letters: {dead['open']} ({by_kind}){targets}; see herald deadletters list",
              markup=False, highlight=False)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _print_queues(queues: dict[str, Any]) -> None:
    if queues["error"]:
        out.print(Text(f"queues: broker unreadable: {queues['error']}", style="red"))
        return
    table = Table("queue", "waiting", "unacked", "oldest", f"over {_age(queues['age_threshold_s'])}")
    for q in queues["rows"]:
        table.add_row(q["queue"], str(q["waiting"]), "-" if q["unacked"] is None else str(q["unacked"]),
                      _age(q["oldest_age_s"]), Text("yes", style="red") if q["over_sla"] else "no")
    out.print(table)


def _print_circuits(circuits: dict[str, Any]) -> None:
    if circuits["error"]:
        out.print(Text(f"circuits: unreadable: {circuits['error']}", style="red"))
    elif not circuits["shared"]:
        out.print("circuits: kept per process (the broker is not Redis): see the workers' logs")
    elif not circuits["rows"]:
        out.print("every provider circuit closed")
    else:
        table = Table("provider", "host", "circuit", "open for")
        for c in circuits["rows"]:
            state = Text(c["state"], style="red") if c["state"] == "open" else Text(c["state"])
            table.add_row(c["provider"], Text(c["host"]), state, _age(c["open_for_s"]) if c["open_for_s"] else "-")
        out.print(table)


def _print_unreached(pages: list[dict[str, Any]]) -> None:
    if not pages:
        out.print("no page left unreached")
        return
    table = Table("page reached nobody", "person", "event", "since")
    for p in pages:
        table.add_row(Text(str(p.get("event_type") or p.get("type") or "-")), Text(str(p.get("person_id", "-"))),
                      str(p.get("event_id", "-")), str(p.get("unreached_at") or "-"))
    out.print(table)


def _print_credentials(credentials: list[dict[str, Any]]) -> None:
    if not credentials:
        out.print("no credential with an expiry in the inventory")
        return
    table = Table("credential expiring soonest", "environment", "owner", "expires", "days left")
    for c in credentials:
        days = c["days_left"]
        left = Text(f"{days:g}", style="red" if days < 0 else "yellow" if days < 14 else "") \
            if days is not None else Text("-")
        table.add_row(Text(c["name"]), c["environment"], Text(c["owner"] or "-"), c["expires_at"] or "-", left)
    out.print(table)
