"""The migrations build exactly the schema herald/models.py describes, and each revision goes down and up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from herald import migrate
from herald.models import Base

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"herald_migrations_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_models_schema(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert differences(empty_database) == []


def test_the_newest_revision_goes_down_and_up_again(empty_database: str) -> None:
    config = migrate.config(empty_database)
    migrate.upgrade(empty_database)
    command.downgrade(config, "-1")
    assert differences(empty_database) != []  # the newest revision's tables are gone
    command.upgrade(config, "head")
    assert differences(empty_database) == []
