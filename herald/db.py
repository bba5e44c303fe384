"""The database engine and sessions, re-created in every forked child."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from herald.safefiles import private_file
from herald.settings import get_settings

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Several processes share the file: WAL lets readers run beside one writer, and
    # busy_timeout makes a writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            private_file(database)  # 0600: it holds Web Push auth secrets (the -wal file follows)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args(url))


def connect_args(url: str) -> dict[str, Any]:
    """The driver arguments herald adds to a server database's URL: PostgreSQL's ``connect_timeout``
    (``HERALD_DATABASE_CONNECT_TIMEOUT_S``) unless the URL names its own. Without it libpq waits for the
    operating system's TCP timeout (minutes) on a host that drops packets, or forever on one that accepts the
    connection and never answers."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return {}
    return {"connect_timeout": get_settings().database_connect_timeout_s}


def engine() -> Engine:
    global _engine, _factory
    if _engine is None:
        _engine = make_engine(get_settings().effective_database_url)
        _factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine (after fork, or when settings change); the next use builds a new one."""
    global _engine, _factory
    if _engine is not None:
        # close=False: the parent's connections belong to the parent, never close them here.
        _engine.dispose(close=False)
    _engine = None
    _factory = None


@contextmanager
def session() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    engine()
    assert _factory is not None
    with _factory() as db, db.begin():
        yield db


def is_postgres() -> bool:
    return engine().dialect.name == "postgresql"


os.register_at_fork(after_in_child=reset_engine)
