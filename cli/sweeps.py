"""``herald sweep recover|outbox|credentials|backlog|due|purge`` and ``herald status``.

``herald status`` exits 1 when the work failed: a sweep is overdue or its last run failed, an operations
condition is raised, a worker pool is down, or a dead letter is open (cli.output has every exit code).
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
    """Show when each sweep last ran, whether it is overdue, each worker pool and its live workers, the
    operations conditions raised now, and the dead letters still open (not replayed), by kind.

    Exits 1 when a sweep is overdue (no success within twice its period; a sweep that has not run
    since beat started less than that ago is "not yet due", not overdue) or its last run failed, an
    operations condition is raised (queue backlog, processing delayed, SLA breached...), a pool is down
    (it had workers and none has sent a heartbeat within HERALD_HEARTBEAT_TIMEOUT_S; a pool no worker
    ever ran is "not seen"), or a dead letter is open (`herald deadletters list` shows them, `replay`
    retries them, `dismiss` closes them).

    Examples:

        herald status

        herald status --json | jq '.sweeps[] | select(.overdue)'

        herald status --json | jq '.pools[] | select(.state == "down")'

        herald status --json | jq .dead_letters
    """
    from herald.models import utcnow
    from schedules import status as status_module

    now = utcnow()
    sweeps = status_module.sweeps(now)
    raised = status_module.raised_conditions()
    dead = status_module.open_dead_letters()
    pools = status_module.pools(now)
    if as_json:
        print_json({"sweeps": sweeps, "pools": pools, "raised": raised,
                    "beat_started_at": status_module.beat_started_at(),
                    "dead_letters": {"open": sum(dead.values()), "by_kind": dead}})
    else:
        _print_sweeps(sweeps, now)
        _print_pools(pools, now)
        _print_conditions(raised)
        _print_dead_letters(dead)
    if (any(r["overdue"] or r["last_outcome"] == "failed" for r in sweeps) or raised or dead
            or any(p["state"] == "down" for p in pools)):
        raise typer.Exit(EXIT_FAILED)


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


def _print_dead_letters(dead: dict[str, int]) -> None:
    if not dead:
        out.print("no open dead letter")
        return
    by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(dead.items()))
    out.print(f"open dead letters: {sum(dead.values())} ({by_kind}); see herald deadletters list",
              markup=False, highlight=False)
