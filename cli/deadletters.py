"""``herald deadletters list|replay|dismiss``: work that stopped, and what to do with it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.output import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, Json, fail, out, print_json
from cli.progress import bar, on_terminal
from herald.errors import BrokerUnavailable

deadletters_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)


@deadletters_app.command("list")
def deadletters_list(
    include_replayed: Annotated[bool, typer.Option("--all", help="Include replayed ones.")] = False,
    as_json: Json = False,
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
        print_json(rows)
        return
    table = Table("id", "when", "kind", "task / queue", "reason")
    for r in rows:
        table.add_row(str(r["id"]), r["created_at"][:19], r["kind"], r["task"] or r["queue"] or "-", r["reason"])
    out.print(table)


@deadletters_app.command("replay")
def deadletters_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids (default: all not replayed).")] = None,
    as_json: Json = False,
) -> None:
    """Send dead letters back into the pipeline (malformed messages have nothing to replay).

    One dead letter at a time, each in its own transaction, with a progress bar on a terminal. If the broker
    goes away half-way, those already replayed stay replayed: the message says which, and exit 3.

    Examples:

        herald deadletters replay 12 13

        herald deadletters replay
    """
    from herald import deadletters

    todo = list(dict.fromkeys(ids)) if ids else _open_ids()
    done: list[int] = []
    with bar(f"replaying {len(todo)} dead letter(s)", len(todo), shown=on_terminal(as_json)) as advance:
        for dead_letter in todo:
            try:
                done += deadletters.replay([dead_letter])
            except BrokerUnavailable as exc:
                fail(EXIT_UNAVAILABLE, f"{exc} (replayed before it: {', '.join(map(str, done)) or 'none'})")
            advance(1)
    if as_json:
        print_json({"replayed": done, "skipped": [i for i in todo if i not in done]})
        return
    out.print(f"replayed {len(done)} dead letter(s): {', '.join(map(str, done)) or '-'}")


def _open_ids() -> list[int]:
    """The dead letters not replayed yet, oldest first."""
    from sqlalchemy import select

    from herald import db
    from herald.models import DeadLetter

    with db.session() as s:
        return list(s.scalars(select(DeadLetter.id).where(DeadLetter.replayed_at.is_(None)).order_by(DeadLetter.id)))


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
        fail(EXIT_BAD_INPUT, "no open dead letter with id " + ", ".join(str(i) for i in sorted(set(ids) - set(done))))
