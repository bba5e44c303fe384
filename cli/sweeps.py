"""CLI for the sweeps: ``herald credentials ...``, ``herald sweep credentials|backlog|due|purge``, ``herald status``.

cli.main registers these with :func:`register`. Exit codes as in cli.main: 0 success;
1 the work failed (``herald status``: a sweep is overdue or its last run failed, an operations condition
is raised, a worker pool is down, or a dead letter is open); 2 bad input;
3 a service herald needs is unreachable.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 1, 2, 3

credentials_app = typer.Typer(help="The credential inventory: import, add, list.", no_args_is_help=True)

# Never markup: names, paths and reasons come from input ("[/x]" as a credential's name crashed
# `credentials list` for good). Style is given as style= or Text, never inside the text.
out = Console(soft_wrap=True, markup=False)  # long paths stay on one line (and greppable)
err = Console(stderr=True, soft_wrap=True, markup=False)

Json = Annotated[bool, typer.Option("--json", help="Print as JSON.")]
Environment = Annotated[str, typer.Option(help="Environment of the credentials (HERALD_ENVIRONMENTS).")]
Owner = Annotated[str | None, typer.Option(help="Owner: team:ID or person:ID.")]


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"herald: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# --- herald credentials -------------------------------------------------------------------------


@credentials_app.command("import")
def credentials_import(
    path: Annotated[Path, typer.Argument(help="A certificate or JWT file, a folder of them, or a YAML/JSON "
                                              "list of declared credentials.")],
    environment: Environment = "prod",
    owner: Owner = None,
    as_json: Json = False,
) -> None:
    """Import credentials. A file or folder is remembered and rescanned on every credential sweep.

    Folders are read recursively: .pem .crt .cer .cert .der (PEM single or bundle, DER), .p12 .pfx
    (password in HERALD_CREDENTIAL_PKCS12_PASSWORD), .jwt .token (the exp claim). A .yaml/.yml/.json
    file is a list of declared entries (name, kind, expires_at, environment, owner, version).
    Nobody is notified here: the credential sweep does that (`herald sweep credentials` runs one now).

    Examples:

        herald credentials import /etc/pki/partners --environment prod --owner team:security

        herald credentials import api-keys.yaml
    """
    from rich.markup import escape
    from rich.progress import Progress

    from herald import db, inventory
    from herald.inventory import CredentialError

    if not path.exists():
        _fail(EXIT_BAD_INPUT, f"{path}: no such file or folder")
    if not path.is_dir() and not path.is_file():  # /dev/zero, a FIFO: never read
        _fail(EXIT_BAD_INPUT, f"{path}: not a regular file or a folder: not read")
    result: dict[str, Any]
    try:
        if path.is_file() and path.suffix.lower() in inventory.DECLARED_SUFFIXES:
            entries = inventory.load_declared(path)
            with db.session() as s:
                for e in entries:
                    inventory.declare(s, name=str(e["name"]), kind=e["kind"],
                                        expires_at=inventory.parse_expiry(e["expires_at"]),
                                        environment=str(e.get("environment", environment)),
                                        owner=e.get("owner", owner), version=e.get("version"))
            result = {"declared": len(entries)}
        else:
            files = inventory.candidate_files(path)
            with Progress(console=err, transient=True, disable=as_json or len(files) < 2) as bar:
                task = bar.add_task(f"reading {escape(str(path))}", total=len(files))  # a markup column
                with db.session() as s:
                    source = inventory.add_source(s, path, environment=environment, owner=owner)
                    result = dict(inventory.rescan_source(s, source, progress=lambda _p: bar.advance(task)))
                    result["problems"] = [{"path": r["path"], "error": r["error"]}
                                          for r in inventory.list_credentials(s, environment=environment)
                                          if r["error"] and r["path"] and r["path"].startswith(source.path)]
    except CredentialError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    if as_json:
        _json(result)
        return
    if "declared" in result:
        out.print(f"{path}: {result['declared']} declared credential(s) stored")
    else:
        out.print(f"{path}: {result['read']} credential(s) read, {result['unreadable']} unreadable, "
                  f"{result['retired']} gone since the last scan")
        for problem in result["problems"]:
            err.print(f"  unreadable: {problem['path']}: {problem['error']}", markup=False, highlight=False)
    out.print("the credential sweep notifies owners (run one now: herald sweep credentials)")


@credentials_app.command("add")
def credentials_add(
    name: Annotated[str, typer.Argument(help="The credential's name (a directory resource of kind credential "
                                             "with this name also receives its notifications).")],
    kind: Annotated[str, typer.Option(help="api_key, client_secret, token or certificate.")] = "api_key",
    expires_at: Annotated[str | None, typer.Option(help="ISO date or time, e.g. 2027-01-31.")] = None,
    jwt_file: Annotated[Path | None, typer.Option(help="Read the expiry from this JWT's exp claim.")] = None,
    environment: Environment = "prod",
    owner: Owner = None,
    version: Annotated[str | None, typer.Option(help="Version id; default: derived from the expiry. "
                                                     "A new version restarts the thresholds.")] = None,
) -> None:
    """Declare one credential with a known expiry (an API key, a client secret, a token).

    Examples:

        herald credentials add partner-acme-key --kind api_key --expires-at 2027-01-31 --owner team:security

        herald credentials add portal-token --jwt-file portal.jwt --environment test --owner person:alice
    """
    from herald import db, inventory
    from herald.inventory import CredentialError

    if (expires_at is None) == (jwt_file is None):
        _fail(EXIT_BAD_INPUT, "give exactly one of --expires-at or --jwt-file")
    try:
        with db.session() as s:
            if jwt_file is not None:
                token = inventory.read_bytes(jwt_file).decode("ascii", errors="replace")
                row = inventory.declare_jwt(s, name=name, token=token, environment=environment, owner=owner)
            else:
                row = inventory.declare(s, name=name, kind=cast(inventory.Kind, kind),
                                          expires_at=inventory.parse_expiry(expires_at),
                                          environment=environment, owner=owner, version=version)
            summary = f"{row.name} ({row.environment}) expires {row.expires_at:%Y-%m-%d %H:%M} UTC"
    except (CredentialError, OSError) as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    out.print(f"stored {summary}")


@credentials_app.command("list")
def credentials_list(
    environment: Annotated[str | None, typer.Option(help="Only this environment.")] = None,
    include_inactive: Annotated[bool, typer.Option("--all", help="Include credentials whose file is gone.")] = False,
    as_json: Json = False,
) -> None:
    """List the inventory, soonest expiry first: name, kind, environment, owner, expires at, days left.

    Example:

        herald credentials list --environment prod --json | jq '.[] | select(.days_left < 14)'
    """
    from herald import db, inventory

    with db.session() as s:
        rows = inventory.list_credentials(s, environment=environment, include_inactive=include_inactive)
    if as_json:
        _json(rows)
        return
    table = Table("name", "kind", "environment", "owner", "expires at", "days left", "status")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["environment"], r["owner"] or "-", (r["expires_at"] or "-")[:16],
                      "-" if r["days_left"] is None else str(r["days_left"]), r["status"] if r["active"] else "gone")
    out.print(table)
    for r in rows:  # reasons are long: one line each under the table
        if r["error"]:
            err.print(f"unreadable: {r['path']}: {r['error']}", markup=False, highlight=False)


# --- herald sweep ... ---------------------------------------------------------------------------


def _report(name: str, summary: dict[str, Any] | None, as_json: bool) -> None:
    if summary is None:
        if as_json:
            _json({"skipped": True})
        else:
            out.print(f"{name}: skipped, another run holds the lock")
        return
    if as_json:
        _json(summary)
    else:
        out.print(json.dumps(summary, default=str), markup=False, highlight=False)


def sweep_credentials(as_json: Json = False) -> None:
    """Rescan the credential inventory and notify each newly crossed threshold once (beat runs this hourly).

    Example:

        herald sweep credentials --json
    """
    from schedules.expiry import sweep_credentials as run

    _report("credentials", run(), as_json)


def sweep_backlog(as_json: Json = False) -> None:
    """Measure queue depth and age and per-flow time to delivery; raise or clear conditions once.

    Example:

        herald sweep backlog --json | jq .queues
    """
    from schedules.backlog import scan_backlog

    _report("backlog", scan_backlog(), as_json)


def sweep_due(as_json: Json = False) -> None:
    """Run the timed work that is due now (escalation steps...), as the beat tick does.

    Example:

        herald sweep due
    """
    from schedules.due import tick_recorded

    _report("due", tick_recorded(), as_json)


def sweep_purge(as_json: Json = False) -> None:
    """Delete events, attempts, audit rows and plumbing older than their retention (HERALD_RETAIN_*).

    Example:

        HERALD_RETAIN_EVENTS_DAYS=30 herald sweep purge
    """
    from schedules.purge import purge

    _report("purge", purge(), as_json)


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
        _json({"sweeps": sweeps, "pools": pools, "raised": raised, "beat_started_at": status_module.beat_started_at(),
               "dead_letters": {"open": sum(dead.values()), "by_kind": dead}})
    else:
        table = Table("sweep", "every", "last success", "last run", "overdue")
        for row in sweeps:
            outcome = row["last_outcome"] or "-"
            if row["last_error"] and outcome == "failed":
                outcome = f"failed: {row['last_error']}"
            table.add_row(row["sweep"], f"{row['period_s']:g}s", _last_success(row, now), outcome,
                          Text("yes", style="red") if row["overdue"] else "no")
        out.print(table)
        _print_pools(pools, now)
        if raised:
            conditions = Table("raised condition", "resource", "value", "threshold", "since")
            for c in raised:
                conditions.add_row(c["condition"], c["resource"], f"{c['value']:g}" if c["value"] is not None else "-",
                                   f"{c['threshold']:g}", c["raised_at"] or "-")
            out.print(conditions)
        else:
            out.print("no operations condition raised")
        if dead:
            by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(dead.items()))
            out.print(f"open dead letters: {sum(dead.values())} ({by_kind}); see herald deadletters list",
                      markup=False, highlight=False)
        else:
            out.print("no open dead letter")
    if (any(r["overdue"] or r["last_outcome"] == "failed" for r in sweeps) or raised or dead
            or any(p["state"] == "down" for p in pools)):
        raise typer.Exit(EXIT_FAILED)


def _print_pools(pools: list[dict[str, Any]], now: datetime) -> None:
    table = Table("pool", "state", "live workers", "last heartbeat")
    for p in pools:
        state: str | Text = p["state"]
        if p["state"] == "down":  # the last worker stopped (warm shutdown) or went silent (killed, hung)
            state = Text(f"down ({p['last_worker']})", style="red")
        workers = ", ".join(w["node"] for w in p["workers"]) or "-"
        table.add_row(p["pool"], state, workers, _ago(p["last_seen"], now))
    out.print(table)


def register(app: typer.Typer, sweep_app: typer.Typer) -> None:
    """Add these commands to herald's CLI (called once by cli.main)."""
    app.add_typer(credentials_app, name="credentials")
    sweep_app.command("credentials")(sweep_credentials)
    sweep_app.command("backlog")(sweep_backlog)
    sweep_app.command("due")(sweep_due)
    sweep_app.command("purge")(sweep_purge)
    app.command("status")(status)
