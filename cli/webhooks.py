"""``herald webhooks list|messages|test|replay|enable|receive``: write-back to the admin platform (docs/webhooks.md)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.output import EXIT_BAD_INPUT, EXIT_FAILED, Json, fail, out, print_json

webhooks_app = typer.Typer(help="Write-back webhooks to the admin platform: endpoints, tests, replays.",
                           no_args_is_help=True)


@webhooks_app.command("list")
def webhooks_list(as_json: Json = False) -> None:
    """List the endpoints (from the directory file) with their state and messages by status.

    A `disabled` endpoint answered 410 Gone (`herald webhooks enable ID` once it is back); `failed` messages
    ran out of retries (`herald webhooks replay --failed`).

    Example:

        herald webhooks list --json
    """
    from herald import db, writeback

    with db.session() as s:
        rows = writeback.endpoint_states(s)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "environment", "url", "state", "pending", "delivered", "failed", "cancelled")
    for r in rows:
        state = r["state"] if r["state"] != "disabled" else f"disabled: {r['disabled_reason']}"
        table.add_row(r["id"], r["environment"], r["url"], state, str(r["pending"]), str(r["delivered"]),
                      str(r["failed"]), str(r["cancelled"]))
    out.print(table)


@webhooks_app.command("messages")
def webhooks_messages(
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Only this endpoint's.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pending, delivered, failed or cancelled.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 50,
    as_json: Json = False,
) -> None:
    """List the newest messages with their state and last error (the ids `herald webhooks replay` takes).

    Example:

        herald webhooks messages --status failed --endpoint admin-prod
    """
    from herald import db, writeback

    with db.session() as s:
        rows = writeback.list_messages(s, endpoint=endpoint, status=status, limit=limit)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "endpoint", "subject", "kind", "status", "attempts", "last error")
    for r in rows:
        table.add_row(str(r["id"]), r["endpoint"], r["subject"], r["kind"], r["status"], str(r["attempts"]),
                      r["last_error"] or "")
    out.print(table)


@webhooks_app.command("test")
def webhooks_test(endpoint: Annotated[str, typer.Argument(help="Endpoint id (herald webhooks list).")],
                  as_json: Json = False) -> None:
    """Send a signed `webhook.test` message to an endpoint now and print what the receiver answered.

    Exits 1 unless the receiver answered 2xx.

    Example:

        herald webhooks test admin-prod
    """
    from herald import writeback

    try:
        reply = writeback.send_test(endpoint)
    except LookupError as exc:
        fail(EXIT_BAD_INPUT, str(exc.args[0]))
    if as_json:
        print_json({"endpoint": endpoint, "status_code": reply.status_code, "body": reply.body,
                    "error": reply.error, "duration_ms": reply.duration_ms})
    else:
        answer = f"HTTP {reply.status_code}" if reply.status_code is not None else reply.error
        out.print(f"{endpoint}: {answer} in {reply.duration_ms} ms{(': ' + reply.body) if reply.body else ''}")
    if not reply.ok:
        raise typer.Exit(EXIT_FAILED)


@webhooks_app.command("replay")
def webhooks_replay(
    message: Annotated[int | None, typer.Argument(help="A message id (herald webhooks messages).")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed message.")] = False,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Only this endpoint's.")] = None,
) -> None:
    """Queue messages again: one by id, or every failed one (of one endpoint). They start over with a
    fresh retry horizon and the same webhook-id.

    Examples:

        herald webhooks replay --failed --endpoint admin-prod

        herald webhooks replay 42
    """
    from herald import db, writeback

    if (message is None) == (not failed):
        fail(EXIT_BAD_INPUT, "name one message id, or --failed")
    with db.session() as s:
        count = writeback.replay(s, message_id=message, failed=failed, endpoint=endpoint)
    if message is not None and count == 0:
        fail(EXIT_BAD_INPUT, f"no message {message} to replay (unknown, or still pending)")
    out.print(f"{count} message(s) queued again")


@webhooks_app.command("enable")
def webhooks_enable(endpoint: Annotated[str, typer.Argument(help="Endpoint id.")]) -> None:
    """Enable an endpoint a 410 Gone disabled (its cancelled messages stay cancelled: replay them by id).

    Example:

        herald webhooks enable admin-prod
    """
    from herald import db, writeback

    try:
        with db.session() as s:
            writeback.enable(s, endpoint)
    except LookupError as exc:
        fail(EXIT_BAD_INPUT, str(exc.args[0]))
    out.print(f"{endpoint} enabled")


@webhooks_app.command("receive")
def webhooks_receive(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8765,
    secret_env: Annotated[str, typer.Option("--secret-env", help="Variable holding the whsec_ secret.")] =
        "HERALD_WEBHOOK_SECRET",
    output: Annotated[Path | None, typer.Option("--out", help="Append each request as a JSON line.")] = None,
) -> None:
    """Run a local receiver that verifies each request's signature (401 when it does not verify) and prints it.

    For trying write-back locally (with HERALD_WEBHOOK_ALLOW_LOOPBACK=true); the admin platform's side is in
    docs/webhooks.md.

    Example:

        HERALD_WEBHOOK_SECRET=whsec_... herald webhooks receive --port 8765 --out received.jsonl
    """
    from devtools.receiver import Received, Receiver

    secret = os.environ.get(secret_env, "")
    if not secret:
        fail(EXIT_BAD_INPUT, f"{secret_env} is not set (the whsec_ secret the endpoints sign with)")

    def show(item: Received) -> None:
        what = f"{item.payload.get('type')} {item.payload.get('subject')}" if item.payload else item.error
        out.print(f"{item.answered} {item.path} {item.webhook_id or '-'} {what}")

    receiver = Receiver(secret, port=port, out=output, on_receive=show).start()
    out.print(f"receiving on {receiver.url} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        receiver.stop()
