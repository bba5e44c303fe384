"""``herald credentials import|add|list``: the credential inventory the expiry sweep watches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from cli.output import EXIT_BAD_INPUT, Json, err, fail, out, print_json
from cli.progress import bar, on_terminal

credentials_app = typer.Typer(help="The credential inventory: import, add, list.", no_args_is_help=True)

Environment = Annotated[str, typer.Option(help="Environment of the credentials (HERALD_ENVIRONMENTS).")]
Owner = Annotated[str | None, typer.Option(help="Owner: team:ID or person:ID.")]


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
    from herald import inventory
    from herald.inventory import CredentialError

    _check_importable(path)
    try:
        if path.is_file() and path.suffix.lower() in inventory.DECLARED_SUFFIXES:
            result = _import_declared(path, environment, owner)
        else:
            result = _import_source(path, environment, owner, show_progress=on_terminal(as_json))
    except CredentialError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    if as_json:
        print_json(result)
    else:
        _print_import(path, result)


def _check_importable(path: Path) -> None:
    """Exit 2 unless ``path`` is a regular file or a folder."""
    if not path.exists():
        fail(EXIT_BAD_INPUT, f"{path}: no such file or folder")
    if not path.is_dir() and not path.is_file():  # /dev/zero, a FIFO: never read
        fail(EXIT_BAD_INPUT, f"{path}: not a regular file or a folder: not read")


def _import_declared(path: Path, environment: str, owner: str | None) -> dict[str, Any]:
    """Store each entry of a YAML/JSON list of declared credentials (one transaction)."""
    from herald import db, inventory

    entries = inventory.load_declared(path)
    with db.session() as s:
        for e in entries:
            inventory.declare(s, name=str(e["name"]), kind=e["kind"],
                              expires_at=inventory.parse_expiry(e["expires_at"]),
                              environment=str(e.get("environment", environment)),
                              owner=e.get("owner", owner), version=e.get("version"))
    return {"declared": len(entries)}


def _import_source(path: Path, environment: str, owner: str | None, *, show_progress: bool) -> dict[str, Any]:
    """Remember a file or folder as a source and scan it now, with a progress bar over two files or more (on a
    terminal)."""
    from herald import db, inventory

    files = inventory.candidate_files(path)
    with bar(f"reading {path}", len(files), shown=show_progress and len(files) > 1) as advance, db.session() as s:
        source = inventory.add_source(s, path, environment=environment, owner=owner)
        result: dict[str, Any] = dict(inventory.rescan_source(s, source, progress=lambda _p: advance(1)))
        result["problems"] = [{"path": r["path"], "error": r["error"]}
                              for r in inventory.list_credentials(s, environment=environment)
                              if r["error"] and r["path"] and r["path"].startswith(source.path)]
    return result


def _print_import(path: Path, result: dict[str, Any]) -> None:
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
        fail(EXIT_BAD_INPUT, "give exactly one of --expires-at or --jwt-file")
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
        fail(EXIT_BAD_INPUT, str(exc))
    out.print(f"stored {summary}")


@credentials_app.command("retire")
def credentials_retire(
    name: Annotated[str, typer.Argument(help="The declared credential's name.")],
    environment: Environment = "prod",
) -> None:
    """Stop tracking a declared credential nobody uses any more (an expired key that was replaced under another
    name, say): no sweep notifies its owners and `herald status` no longer asks for it. `credentials add` with
    the same name brings it back. A credential read from a file, or declared in the directory file, follows
    its source: remove the file or the directory entry instead.

    Example:

        herald credentials retire partner-acme-key --environment prod
    """
    from herald import db, inventory
    from herald.inventory import CredentialError

    try:
        with db.session() as s:
            row = inventory.retire(s, name=name, environment=inventory.check_environment(environment))
            summary = f"{row.name} ({row.environment})"
    except CredentialError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    out.print(f"retired {summary}: no longer tracked (herald credentials list --all shows it)")


@credentials_app.command("list")
def credentials_list(
    environment: Annotated[str | None, typer.Option(help="Only this environment.")] = None,
    include_inactive: Annotated[bool, typer.Option(
        "--all", help="Include credentials whose file is gone and retired ones.")] = False,
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
        print_json(rows)
        return
    table = Table("name", "kind", "environment", "owner", "expires at", "days left", "status")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["environment"], r["owner"] or "-", (r["expires_at"] or "-")[:16],
                      "-" if r["days_left"] is None else str(r["days_left"]), _state(r))
    out.print(table)
    for r in rows:  # reasons are long: one line each under the table
        if r["error"]:
            err.print(f"unreadable: {r['path']}: {r['error']}", markup=False, highlight=False)


def _state(row: dict[str, Any]) -> str:
    """The status column: the expiry's status while tracked; ``retired`` (a declared one, by `retire`) or ``gone``
    (its file or directory entry disappeared) once not."""
    if row["active"]:
        return str(row["status"])
    return "retired" if row["origin"] == "declared" else "gone"
