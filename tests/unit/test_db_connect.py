"""The driver arguments herald adds to its database URL (herald/db.py connect_args); the command that no longer
hangs on a silent database: tests/integration/test_deployment.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from herald.db import connect_args
from tests.builders import Env, env_override

PG = "postgresql+psycopg://herald@db.internal:5432/herald"


@pytest.fixture
def env() -> Iterator[Env]:
    yield from env_override()


def test_postgres_gets_the_connect_timeout_setting(env: Env) -> None:
    assert connect_args(PG) == {"connect_timeout": 10}
    env["HERALD_DATABASE_CONNECT_TIMEOUT_S"] = "3"
    assert connect_args(PG) == {"connect_timeout": 3}
    assert connect_args("postgresql://herald@db.internal/herald") == {"connect_timeout": 3}


def test_a_url_that_names_its_own_timeout_keeps_it() -> None:
    # libpq reads it from the URL: herald adds nothing that would override it
    assert connect_args(PG + "?connect_timeout=30") == {}


def test_sqlite_gets_no_postgres_argument() -> None:
    assert connect_args("sqlite:////tmp/herald.db") == {}


def test_a_timeout_below_one_second_is_refused(env: Env) -> None:
    # libpq treats 0 as "wait forever": the setting cannot ask for that by accident
    env["HERALD_DATABASE_CONNECT_TIMEOUT_S"] = "0"
    with pytest.raises(ValueError, match="database_connect_timeout_s"):
        connect_args(PG)
