"""Helpers for tests that send through the fakes: start them, point herald's settings at them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.fakes.server import FakeProviders


@contextmanager
def running_fakes(folder: Path | None = None, **options: Any) -> Iterator[FakeProviders]:
    """The three fakes on a thread of this process, stopped afterwards."""
    fakes = FakeProviders(folder or Path(tempfile.mkdtemp(prefix="herald-fakes-")), **options)
    fakes.start_in_thread()
    try:
        yield fakes
    finally:
        fakes.stop_thread()


@contextmanager
def herald_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for herald in this process, and put everything back afterwards."""
    from herald.settings import get_settings
    from workers.deliver.delivery import channel_for

    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    get_settings.cache_clear()
    channel_for.cache_clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        channel_for.cache_clear()
