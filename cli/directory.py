"""``herald directory check|apply``: the directory file (people, teams, rotations, routes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.output import EXIT_BAD_INPUT, Json, err, out, print_json
from cli.progress import bar, on_terminal
from herald.errors import DirectoryError

directory_app = typer.Typer(help="Check and load the directory file.", no_args_is_help=True)


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
def directory_apply(
    file: Annotated[Path, typer.Argument(help="The directory YAML file.")],
    as_json: Json = False,
) -> None:
    """Validate a directory file and load it into the database (one transaction).

    On a terminal a progress bar follows the three steps: read and validate, apply, commit.

    Examples:

        herald directory apply ops/directory.yaml

        herald directory apply ops/directory.yaml --json
    """
    from herald import db, directory

    with bar(f"applying {file}", 3, shown=on_terminal(as_json)) as advance:
        spec = _load_directory(file)
        advance(1)
        with db.session() as s:
            counts = directory.apply(spec, s)
            advance(1)
        advance(1)  # committed
    if as_json:
        print_json({"file": str(file), "applied": counts})
        return
    out.print(f"{file}: applied " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
