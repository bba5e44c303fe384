"""Checks shared by the request bodies' models."""

from __future__ import annotations

import re

# NUL and lone surrogates: Postgres cannot store them, so they are refused at the door with a reason
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

MAX_ID = 2**63 - 1  # ids are 64-bit: a larger one is simply not there (and must not reach the database)


def storable(value: str | None) -> str | None:
    """A pydantic validator's body: refuse text Postgres cannot store."""
    if value is not None and _UNSTORABLE.search(value):
        raise ValueError("contains a NUL character or a lone surrogate")
    return value
