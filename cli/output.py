"""What every herald command prints, and how it exits: one console pair, JSON output, the exit codes.

Exit codes: 0 success; 1 the work failed (for example the demo left targets pending); 2 bad input
(an invalid event, directory file or argument), with a one-line reason; 3 a service herald needs
(broker or database) is unreachable.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 1, 2, 3

# Never markup: event fields, names, paths and reasons come from input, and "[/x]" in one would crash a
# command (rich parses markup in print() and in table cells; "[/x]" as a credential's name crashed
# `credentials list` for good). Style is given as style= or Text, never inside the text.
# soft_wrap: a long path or id stays on one line (and greppable).
out = Console(markup=False, soft_wrap=True)
err = Console(stderr=True, markup=False, soft_wrap=True)

Json = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


def fail(code: int, message: str) -> NoReturn:
    """Say why on stderr, one line prefixed ``herald:``, and exit with ``code``."""
    err.print(f"herald: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout, never wrapped (dates and other objects as strings)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
