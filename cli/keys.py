"""``herald keys create|list|revoke``: API keys for integration code (docs/access.md)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from cli.output import EXIT_BAD_INPUT, Json, fail, out, print_json

keys_app = typer.Typer(help="API keys: create, list, revoke. Each key acts in one environment with one scope.",
                       no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    environment: Annotated[str, typer.Option(help="The one environment the key acts in (HERALD_ENVIRONMENTS).")],
    scope: Annotated[str, typer.Option(help="What the key may do: publish, devices, answers or read.")],
    label: Annotated[str, typer.Option(help="Who or what uses the key, for `herald keys list`.")] = "",
) -> None:
    """Create a key and print it once: only its hash is stored, so it cannot be shown again.

    Integration code sends it as `Authorization: Bearer KEY`.

    Examples:

        herald keys create --environment prod --scope publish --label "orders service"

        herald keys create --environment prod --scope answers --label ticketing
    """
    from herald import db, keys

    try:
        with db.session() as s:
            info, key = keys.create(s, environment=environment, scope=scope, label=label, created_by="cli")
    except ValueError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    out.print(key)
    out.print(f"key {info.id}: scope {info.scope} in environment {info.environment}. Store it now: "
              "it will not be shown again.")


@keys_app.command("list")
def keys_list(as_json: Json = False) -> None:
    """List every key (revoked ones too): id, environment, scope, label, created, last used, revoked.

    Example:

        herald keys list --json | jq '.[] | select(.revoked_at == null and .last_used_at == null)'
    """
    from herald import db, keys

    with db.session() as s:
        listed = keys.list_keys(s)
    if as_json:
        print_json([{**asdict(k), "created_at": k.created_at.isoformat(), "last_used_at": _iso(k.last_used_at),
                     "revoked_at": _iso(k.revoked_at)} for k in listed])
        return
    table = Table("id", "environment", "scope", "label", "created", "last used", "revoked")
    for k in listed:
        table.add_row(k.id, k.environment, k.scope, k.label or "-", _when(k.created_at), _when(k.last_used_at),
                      _when(k.revoked_at))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id, as `herald keys list` shows it, or "
                                                          "the whole key (a leaked one).")]) -> None:
    """Revoke a key: every door refuses it from now on.

    Example:

        herald keys revoke 3f9c0a51d2e47b68
    """
    from herald import db, keys

    if key_id.startswith(f"{keys.PREFIX}_"):  # hk_<id>_<secret>: its id is the public part
        key_id = key_id.split("_", 2)[1]
    try:
        with db.session() as s:
            info = keys.revoke(s, key_id)
    except LookupError as exc:
        fail(EXIT_BAD_INPUT, str(exc.args[0]))
    out.print(f"key {info.id} ({info.scope} in {info.environment}) revoked at {_when(info.revoked_at)}")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"
