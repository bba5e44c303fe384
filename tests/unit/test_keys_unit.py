"""API keys and sign-in links on the embedded default's database (in-memory SQLite), no services.

The same rules run on Postgres in tests/integration/test_keys.py and test_signin.py; here they prove the
embedded default (SQLite, where ``UPDATE ... RETURNING`` claims a link) behaves alike.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from herald import keys, signin
from herald.keys import KeyRefused
from herald.models import Person
from herald.signin import SignInRefused
from tests.unit.domain_helpers import memory_session


def test_a_key_reads_hk_id_secret_with_32_random_bytes() -> None:
    with memory_session() as s:
        info, key = keys.create(s, environment="dev", scope="devices")
        other, second = keys.create(s, environment="dev", scope="devices")
    assert re.fullmatch(r"hk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    assert key.split("_", 2)[1] == info.id and info.id != other.id and key != second


@pytest.mark.parametrize(("scope", "environment", "status"), [
    ("devices", "dev", None), ("devices", None, None), ("devices", "prod", 403), ("publish", "dev", 403),
])
def test_authenticate_on_sqlite(scope: str, environment: str | None, status: int | None) -> None:
    with memory_session() as s:
        _, key = keys.create(s, environment="dev", scope="devices")
        if status is None:
            assert keys.authenticate(s, key, scope=scope, environment=environment).last_used_at is not None
        else:
            with pytest.raises(KeyRefused) as caught:
                keys.authenticate(s, key, scope=scope, environment=environment)
            assert caught.value.status == status


def test_authenticate_refuses_a_scope_that_does_not_exist() -> None:
    with memory_session() as s, pytest.raises(ValueError, match="unknown scope 'admin'"):
        keys.authenticate(s, "hk_x", scope="admin")


def test_a_link_is_claimed_once_on_sqlite() -> None:
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    with memory_session() as s:
        s.add(Person(id="chen", name="Chen", email="chen@example.com", aliases=["C.Wu"]))
        link = signin.create_link(s, "chen", now=now)
        session = signin.exchange_link(s, link, now=now + timedelta(minutes=1))
        assert signin.person_for_bearer(s, session, now=now + timedelta(hours=1)) == "chen"
        with pytest.raises(SignInRefused, match="already used"):
            signin.exchange_link(s, link, now=now + timedelta(minutes=2))
        assert signin.resolve_identity(s, "c.wu") == "chen"


def test_a_link_expires_on_sqlite() -> None:
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    with memory_session() as s:
        s.add(Person(id="chen", name="Chen"))
        link = signin.create_link(s, "chen", now=now)
        with pytest.raises(SignInRefused, match="expired at 2026-12-02T09:15:00"):
            signin.exchange_link(s, link, now=now + timedelta(minutes=15))
        assert signin.exchange_link(s, link, now=now + timedelta(minutes=14, seconds=59)).startswith("hs_")
