"""The unit tier reaches no service: a connection to Postgres, Redis or RabbitMQ fails the test.

Nothing here creates a database or starts a process (that is tests/integration/conftest.py, which pytest loads
only for the tests under it). Whatever touches herald's embedded default (the SQLite files of its data folder)
gets a throwaway data folder, not the checkout's .herald/.

Redis and RabbitMQ clients connect through Python's socket module; psycopg connects through libpq, so it is stopped
at its own entry point. The failure is pytest's own (a BaseException), so no ``except Exception`` in the code under
test can swallow it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

SERVICE_PORTS = {5432: "PostgreSQL", 6379: "Redis", 5672: "RabbitMQ"}
_DATA_DIR = tempfile.mkdtemp(prefix="herald-unit-")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HERALD_DATA_DIR", _DATA_DIR)  # a whole-suite run keeps the integration tier's


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


def _refuse(what: str) -> None:
    pytest.fail(f"a unit test reached {what}: unit tests use no services (move it to tests/integration)",
                pytrace=True)


def _port(address: Any) -> int | None:
    return address[1] if isinstance(address, tuple) and len(address) >= 2 else None


@pytest.fixture(autouse=True)
def embedded_default() -> Iterator[None]:
    """In a whole-suite run (``pytest`` at the top) the integration tier has put its session's settings (its
    Postgres database, Redis, keys) in the environment: a unit test runs without them, on the embedded default
    in a throwaway data folder, as under ``pytest tests/unit``; herald's settings, engine and built channels are
    forgotten on the way in and out, so neither tier sees the other's."""
    integration = sys.modules.get("tests.integration.conftest")
    if integration is None:  # `pytest tests/unit` (the Makefile's first tier): nothing to hide
        yield
        return
    saved = dict(os.environ)
    for key in integration.TEST_ENV:
        os.environ.pop(key, None)
    os.environ["HERALD_DATA_DIR"] = _DATA_DIR
    _forget()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _forget()


def _forget() -> None:
    from herald import db
    from herald.settings import get_settings

    get_settings.cache_clear()
    db.reset_engine()


@pytest.fixture(autouse=True)
def no_services(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a unit test that connects to a service's port, or to Postgres at all."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded_connect(self: socket.socket, address: Any) -> None:
        port = _port(address)
        if port in SERVICE_PORTS:
            _refuse(f"{SERVICE_PORTS[port]} ({address[0]}:{port})")
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        port = _port(address)
        if port in SERVICE_PORTS:
            _refuse(f"{SERVICE_PORTS[port]} ({address[0]}:{port})")
        return connect_ex(self, address)

    def no_postgres(*args: Any, **kwargs: Any) -> Any:
        _refuse("PostgreSQL (psycopg.connect)")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(psycopg, "connect", no_postgres)
    monkeypatch.setattr(psycopg.Connection, "connect", no_postgres)
    yield
