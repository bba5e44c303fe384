"""The unit tier's guard (tests/unit/conftest.py): a unit test that reaches a service fails, loudly."""

from __future__ import annotations

import socket

import psycopg
import pytest
import redis
import sqlalchemy


@pytest.mark.parametrize("port", [5432, 6379, 5672])
def test_a_connection_to_a_services_port_fails_the_test(port: int) -> None:
    with pytest.raises(pytest.fail.Exception, match="unit tests use no services"):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_redis_and_postgres_clients_are_stopped_too() -> None:
    # redis-py turns an OSError into its ConnectionError; the guard's failure is not an OSError, it gets through
    with pytest.raises(pytest.fail.Exception, match="Redis"):
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=1).ping()
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL"):
        psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=1)
    engine = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL"):
        engine.connect()


def test_other_connections_are_left_alone() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
