"""Progress bars where a person waits: drawn on stderr, and only when someone watches a terminal.

Never when stdout is not a terminal (a pipe, a file, a script reading the result) nor with ``--json``: a
machine reading the output gets the result only. The bar is transient: once done, only the result stays.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cli.output import err


def on_terminal(as_json: bool = False) -> bool:
    """Whether to draw a bar: a person at a terminal (stdout and stderr), and no ``--json``."""
    return not as_json and sys.stdout.isatty() and err.is_terminal and not err.is_dumb_terminal


@contextmanager
def bar(description: str, total: int | None, *, shown: bool) -> Iterator[Callable[[int], None]]:
    """A bar of ``total`` steps (None: a bar that pulses until done); yields ``advance(steps=1)``."""
    from rich.markup import escape
    from rich.progress import Progress

    with Progress(console=err, transient=True, disable=not shown) as progress:
        task = progress.add_task(escape(description), total=total)  # the description column renders markup

        def advance(steps: int = 1) -> None:
            progress.advance(task, steps)

        yield advance
