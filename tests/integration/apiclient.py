"""What the API tests share: the app in-process on the session's real Postgres and Redis, and keys to call it with."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient


def api_client() -> Iterator[TestClient]:
    """The body of each module's ``client`` fixture (which also asks for ``clean``)."""
    from api import create_app

    # raise_server_exceptions=False: a bug answers 500 as it would to a real client, and the test sees it
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def make_key(environment: str, scope: str) -> str:
    from herald import db, keys

    with db.session() as s:
        return keys.create(s, environment=environment, scope=scope, label="test")[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(person_id: str) -> str:
    """A session token for a directory person, through a one-time link as a person's app gets one."""
    from herald import db, signin

    with db.session() as s:
        link = signin.create_link(s, person_id)
    with db.session() as s:
        return signin.exchange_link(s, link)
