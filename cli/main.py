"""The ``herald`` command line.

Exit codes: 0 success; 1 the work failed (for example the demo left targets pending);
2 bad input (an invalid event, directory file or argument), with a one-line reason;
3 a service herald needs (broker or database) is unreachable.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli import sweeps as cli_sweeps
from cli.channels import devices_app, fakes_app, vapid_app
from herald.errors import BrokerUnavailable, DirectoryError, InvalidEvent

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 1, 2, 3

app = typer.Typer(help="herald: push notifications for integration administration events.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  pretty_exceptions_show_locals=False)
events_app = typer.Typer(help="Trace events.", no_args_is_help=True)
directory_app = typer.Typer(help="Check and load the directory file.", no_args_is_help=True)
deadletters_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)
sweep_app = typer.Typer(help="Run a periodic sweep now.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(directory_app, name="directory")
app.add_typer(deadletters_app, name="deadletters")
app.add_typer(sweep_app, name="sweep")
cli_sweeps.register(app, sweep_app)  # credentials, sweep credentials|backlog|due|purge, status
app.add_typer(devices_app, name="devices")
app.add_typer(vapid_app, name="vapid")
app.add_typer(fakes_app, name="fakes")

# Never markup: event fields, names and reasons come from input, and "[/x]" in one would crash a
# command (rich parses markup in print() and in table cells). Style is given as style=, never in text.
out = Console(markup=False, soft_wrap=True)  # soft_wrap: a long path or id stays on one line
err = Console(stderr=True, markup=False)


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"herald: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the pipeline.")] = 180.0,
    dev_channel: Annotated[bool, typer.Option("--dev-channel", help="Write JSON lines (the development "
                                              "channel) instead of sending to the local fakes.")] = False,
) -> None:
    """Run the whole pipeline on a sample directory and a burst covering all seven flows.

    Uses the embedded default (SQLite state and broker in HERALD_DATA_DIR) unless
    HERALD_DATABASE_URL / HERALD_BROKER_URL point elsewhere. Messages go through the real FCM, APNs
    and Web Push code to local fakes of the providers, started for the demo. Exits 1 if a target is
    still pending.

    Examples:

        herald demo

        herald demo --json | jq .pending

        herald demo --dev-channel      # JSON lines in HERALD_DATA_DIR/dev-channel.jsonl instead
    """
    from devtools import demo as demo_module

    progress = None if as_json else (lambda text: err.print(text, style="dim"))
    result = demo_module.run(timeout_s=timeout_s, progress=progress, dev_channel=dev_channel)
    if as_json:
        _json({k: result[k] for k in ("flows", "pending", "failed", "deliberate_faults", "written_back")})
    else:
        _print_demo(result)
    if result["pending"]:
        raise typer.Exit(EXIT_FAILED)


def _print_demo(result: dict[str, Any]) -> None:
    """The demo's summary: per flow, the deliberate faults for what they are, and what the answers wrote back."""
    table = Table(title="herald demo: what happened per flow")
    for column in ("flow", "events", "notifications", "deliveries by status"):
        table.add_column(column)
    for flow, row in result["flows"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(row["deliveries"].items())) or "-"
        table.add_row(flow, str(row["events"]), str(row["notifications"]), statuses)
    out.print(table)
    out.print(f"pending targets: {result['pending']}")
    failed, faults = result["failed"], result["deliberate_faults"]
    if faults:
        out.print(f"failed deliveries: {failed['deliberate']} on purpose, {failed['unexpected']} unexpected. "
                  "The fakes were told to misbehave for these sample tokens, to show what herald does:")
        for f in faults:
            out.print(f"  {f['channel']} token {f['token']} ({f['person']}): {f['fault']}: {f['then']}")
    elif failed["unexpected"]:
        out.print(f"failed deliveries: {failed['unexpected']} (unexpected: see herald events show)")
    if result["fakes"] is not None:
        for name, seen in result["fakes"].items():
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(seen["by_status"].items())) or "-"
            extra = f", {seen['decrypted']} decrypted" if "decrypted" in seen else ""
            errors = any(not k.startswith("2") for k in seen["by_status"])
            note = " (the errors are the deliberate faults above)" if errors and faults else ""
            out.print(f"fake {name} received {seen['requests']} requests ({statuses}{extra}){note}")
        out.print(f"what the fakes received: {result['fakes_seen']}")
    else:
        out.print(f"messages written by the development channel: {result['dev_output']}")
    back = result["written_back"]
    out.print("answers written back (flow 7):")
    for incident in back["incidents"]:
        holder = f", assignee {incident['assignee']}" if incident["assignee"] else ""
        stopped = ", escalation stopped" if incident["escalation_stopped"] and incident["status"] != "open" else ""
        out.print(f"  incident {incident['id']} {incident['title']}: {incident['status']}{holder}{stopped}")
    if back["approval"] is not None:
        a = back["approval"]
        votes = ", ".join(f"{v['person']} {v['decision']}" for v in a["votes"]) or "no vote"
        out.print(f"  approval {a['id']} {a['target']} (requested by {a['requester']}, quorum {a['quorum']}): "
                  f"{a['status']} ({votes})")
    for r in back["refused"]:
        out.print(f"  refused on purpose: {r['type']} from {r['responder']}: {r['reason']}")
    out.print("trace one event: herald events list, then herald events show ID")


@app.command()
def migrate() -> None:
    """Create or upgrade herald's database schema (Alembic) to the latest revision.

    Example:

        HERALD_DATABASE_URL=postgresql+psycopg://herald@db/herald herald migrate
    """
    from herald import migrate as migrate_module
    from herald.settings import get_settings

    migrate_module.upgrade()
    url = get_settings().effective_database_url
    out.print(f"database at revision {migrate_module.current_head()} ({url.split('@')[-1]})")


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="Pool to run: ingest, enrich, resolve, deliver.fcm, "
                                           "deliver.apns, deliver.webpush, retry, sweeps, all, "
                                           "or several separated by commas.")],
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", help="Processes or threads.")] = None,
    kind: Annotated[str | None, typer.Option(help="Celery pool kind: prefork, threads, solo.")] = None,
    beat: Annotated[bool, typer.Option(help="Also run the beat scheduler in this worker.")] = False,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Start one worker pool (its own queue or queues), as `celery -A herald.app worker -Q ...` would.

    Examples:

        herald worker --pool resolve

        herald worker --pool deliver.apns --concurrency 4

        herald worker --pool ingest,enrich,resolve

        herald worker --pool all --beat     # one process for everything (development)
    """
    from herald.lanes import ALL_POOL, POOLS, pool_queues

    try:
        queues = pool_queues(pool)
    except KeyError as exc:
        _fail(EXIT_BAD_INPUT, f"unknown pool {exc.args[0]!r} (known: {', '.join([*POOLS, ALL_POOL])})")
    spec = POOLS.get(pool)
    import os

    # one node name per process: Flower and `celery inspect` tell the workers apart
    node = f"{pool.replace(',', '+')}-{os.getpid()}@%h"
    argv = ["worker", "-Q", ",".join(queues), "-n", node, "-l", loglevel,
            "-c", str(concurrency or (spec.concurrency if spec else 2)),
            "--prefetch-multiplier", str(spec.prefetch_multiplier if spec else 1),
            "-P", kind or (spec.kind if spec else "prefork")]
    if beat:
        argv += ["-B", "-s", str(_beat_file())]
    from herald.app import app as celery_app

    celery_app.worker_main(argv)


def _beat_file() -> Path:
    from herald.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir / "celerybeat-schedule"


@app.command()
def beat(loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO") -> None:
    """Run celery beat with herald's schedule (schedules/beat.py). Run exactly one.

    Example:

        herald beat
    """
    from herald.app import app as celery_app

    celery_app.start(["beat", "-s", str(_beat_file()), "-l", loglevel])


FLOWER_MIN_PASSWORD = 12


@app.command()
def flower(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to listen on: loopback unless told otherwise "
                                              "(0.0.0.0 in a container whose port is published on localhost).")]
    = "127.0.0.1",
) -> None:
    """Start Flower, the operations dashboard, behind HTTP basic auth (HERALD_FLOWER_BASIC_AUTH=user:pass).

    Examples:

        HERALD_FLOWER_BASIC_AUTH=ops:s3cret herald flower --port 5555

        HERALD_FLOWER_BASIC_AUTH=ops:s3cret herald flower --address 0.0.0.0   # inside a container
    """
    import os

    auth = os.environ.get("HERALD_FLOWER_BASIC_AUTH")
    if not auth or ":" not in auth:
        _fail(EXIT_BAD_INPUT, "set HERALD_FLOWER_BASIC_AUTH=user:password: Flower shows task arguments "
                              "and never runs without authentication")
    if len(auth.partition(":")[2]) < FLOWER_MIN_PASSWORD:  # "change-me" from an old example, say
        _fail(EXIT_BAD_INPUT, f"HERALD_FLOWER_BASIC_AUTH: the password needs at least {FLOWER_MIN_PASSWORD} "
                              "characters (for example: openssl rand -hex 16)")
    from herald.app import app as celery_app

    celery_app.start(["flower", f"--address={address}", f"--port={port}", f"--basic-auth={auth}"])


@app.command()
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

    EventRow types: artifact.deployed|updated|retired, flow.failed|retry_exhausted|credential_error|recovered,
    approval.requested, business.order_submitted|shipment_status|invoice_posted|partner_onboarding,
    credential.expiring|expired, ops.queue_backlog|processing_delayed|sla_breached (and *_cleared),
    response.acknowledged|resolved|follow_up_requested|approved|rejected|info_requested.

    Examples:

        herald publish artifact.deployed --environment test --data '{"artifact": "orders-api", "kind": "api"}'

        herald publish flow.failed --environment prod --idempotency-key run-8812 --data '{"flow": "orders-to-erp"}'
    """
    from herald.events import validate_event
    from herald.publishing import send_envelope

    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        _fail(EXIT_BAD_INPUT, f"--data is not valid JSON: {exc.msg} at character {exc.pos}")
    except RecursionError:  # the json parser recurses: deep nesting is refused here, as validation would
        _fail(EXIT_BAD_INPUT, "--data is nested too deeply")
    if not isinstance(payload, dict):
        _fail(EXIT_BAD_INPUT, "--data must be a JSON object")
    fields = {"type": type, "data": payload, "environment": environment, "source": source,
              "idempotency_key": idempotency_key, "severity": severity, "subject": subject}
    try:
        event = validate_event({k: v for k, v in fields.items() if v is not None})
        send_envelope(event.to_json())
    except InvalidEvent as exc:
        _fail(EXIT_BAD_INPUT, f"invalid event: {exc}")
    except BrokerUnavailable as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    out.print(str(event.id), markup=False, highlight=False)


EVENT_PREFIX_MIN = 4


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
        _fail(EXIT_BAD_INPUT, f"not an event id or a prefix of one (at least {EVENT_PREFIX_MIN} hex digits): "
                              f"{text[:40]!r}")
    with db.session() as s:
        # Postgres prints a uuid with dashes; SQLite stores its 32 hex digits without them.
        pattern = prefix if db.is_postgres() else prefix.replace("-", "")
        ids = list(s.scalars(select(EventRow.id).where(cast(EventRow.id, String).like(pattern + "%")).limit(6)))
    if not ids:
        _fail(EXIT_FAILED, f"no event id starts with {prefix} (it may not be ingested yet)")
    if len(ids) > 1:
        shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
        _fail(EXIT_BAD_INPUT, f"{prefix} is the start of {'more than 5' if len(ids) > 5 else len(ids)} event ids "
                              f"({shown}): give more of it")
    return ids[0]


@events_app.command("show")
def events_show(
    event_id: Annotated[str, typer.Argument(help="The event id publish printed, or a unique prefix of it "
                                                 "(at least 4 characters).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
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
        _fail(EXIT_FAILED, f"no event {key} (it may not be ingested yet)")
    if as_json:
        _json(found)
        return
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
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the newest events, with their whole ids (`herald events show` takes one, or a unique prefix).

    Example:

        herald events list --limit 5
    """
    from herald.trace import recent

    rows = recent(limit)
    if as_json:
        _json(rows)
        return
    table = Table()
    # the id is never cut (a cut id is useless): it folds onto a second line rather than lose a character
    table.add_column("id", no_wrap=True, overflow="fold", min_width=36)
    for name in ("type", "environment", "severity", "status", "received"):
        table.add_column(name)
    for r in rows:
        table.add_row(r["id"], r["type"], r["environment"], r["severity"], r["status"], r["received_at"])
    out.print(table)


def _load_directory(file: Path) -> Any:
    """The validated directory, or every problem on stderr and exit 2."""
    from herald import directory

    try:
        return directory.load(file)
    except DirectoryError as exc:
        for problem in exc.problems:
            err.print(problem, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@directory_app.command("check")
def directory_check(file: Annotated[Path, typer.Argument(help="The directory YAML file.")]) -> None:
    """Validate a directory file; print every problem with its line and field (exit 2).

    Example:

        herald directory check ops/directory.yaml
    """
    spec = _load_directory(file)
    out.print(f"{file}: ok ({len(spec.people)} people, {len(spec.teams)} teams, "
              f"{len(spec.rotations)} rotations, {len(spec.routes)} routes)")


@directory_app.command("apply")
def directory_apply(file: Annotated[Path, typer.Argument(help="The directory YAML file.")]) -> None:
    """Validate a directory file and load it into the database (one transaction).

    Example:

        herald directory apply ops/directory.yaml
    """
    from herald import db, directory

    spec = _load_directory(file)
    with db.session() as s:
        counts = directory.apply(spec, s)
    out.print(f"{file}: applied " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))


@deadletters_app.command("list")
def deadletters_list(
    include_replayed: Annotated[bool, typer.Option("--all", help="Include replayed ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List dead letters: work that stopped, with its reason.

    Example:

        herald deadletters list --json
    """
    from sqlalchemy import select

    from herald import db
    from herald.models import DeadLetter

    with db.session() as s:
        query = select(DeadLetter).order_by(DeadLetter.id)
        if not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        rows: list[dict[str, Any]] = [
            {"id": r.id, "created_at": r.created_at.isoformat(), "kind": r.kind, "task": r.task_name,
             "queue": r.queue, "reason": r.reason, "ref": r.ref, "replayed_at": r.replayed_at,
             "replay_count": r.replay_count} for r in s.scalars(query)]
    if as_json:
        _json(rows)
        return
    table = Table("id", "when", "kind", "task / queue", "reason")
    for r in rows:
        table.add_row(str(r["id"]), r["created_at"][:19], r["kind"], r["task"] or r["queue"] or "-", r["reason"])
    out.print(table)


@deadletters_app.command("replay")
def deadletters_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids (default: all not replayed).")] = None,
) -> None:
    """Send dead letters back into the pipeline (malformed messages have nothing to replay).

    Examples:

        herald deadletters replay 12 13

        herald deadletters replay
    """
    from herald import deadletters

    try:
        done = deadletters.replay(ids or None)
    except BrokerUnavailable as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    out.print(f"replayed {len(done)} dead letter(s): {', '.join(map(str, done)) or '-'}")


@deadletters_app.command("dismiss")
def deadletters_dismiss(
    ids: Annotated[list[int], typer.Argument(help="Dead letter ids.")],
) -> None:
    """Close dead letters without replaying them (a malformed message, say, once looked at).

    They no longer count as open in `herald status` nor keep the dead_letters condition raised;
    `herald deadletters list --all` still shows them.

    Example:

        herald deadletters dismiss 14
    """
    from herald import deadletters

    done = deadletters.dismiss(ids)
    out.print(f"dismissed {len(done)} dead letter(s): {', '.join(map(str, done)) or '-'}")
    if len(done) < len(set(ids)):
        _fail(EXIT_BAD_INPUT, "no open dead letter with id " + ", ".join(str(i) for i in sorted(set(ids) - set(done))))


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


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import sqlalchemy.exc

    try:
        app()
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        if "no such table" in reason or "does not exist" in reason and "relation" in reason:
            reason = f"the database has no herald schema yet ({reason}): run `herald migrate`"
        else:
            reason = f"database unreachable: {reason}"
        err.print(f"herald: {reason}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_UNAVAILABLE)
