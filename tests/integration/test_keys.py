"""API keys on real Postgres: one environment and one scope each, stored hashed, refused once revoked.

The CLI tests run `python -m cli keys ...` as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from herald import db, keys
from herald.keys import KeyRefused
from herald.models import ApiKey, AuditLog
from tests.integration.conftest import ROOT
from tests.integration.helpers import rows


def new_key(environment: str = "dev", scope: str = "publish", label: str = "") -> tuple[keys.KeyInfo, str]:
    with db.session() as s:
        return keys.create(s, environment=environment, scope=scope, label=label, created_by="tester")


def authenticate(presented: str, scope: str = "publish", environment: str | None = None) -> keys.KeyInfo:
    with db.session() as s:
        return keys.authenticate(s, presented, scope=scope, environment=environment)


def refusal(presented: str, scope: str = "publish", environment: str | None = None) -> KeyRefused:
    with pytest.raises(KeyRefused) as caught:
        authenticate(presented, scope, environment)
    return caught.value


def test_a_new_key_authenticates_for_its_scope_and_environment_and_records_its_use(clean: None) -> None:
    # given a new publish key for dev
    info, key = new_key("dev", "publish", "orders service")
    assert key.startswith(f"hk_{info.id}_") and info.last_used_at is None
    # when it is presented for publishing in dev
    used = authenticate(key, "publish", "dev")
    # then it is accepted, and its last use is recorded
    assert (used.id, used.environment, used.scope, used.label) == (info.id, "dev", "publish", "orders service")
    assert used.last_used_at is not None
    assert rows(select(ApiKey.last_used_at)) == [(used.last_used_at,)]
    # and with no environment named, its own applies
    assert authenticate(key, "publish").environment == "dev"
    # and its creation is audited, without the secret
    assert rows(select(AuditLog.action, AuditLog.subject_id, AuditLog.actor)) == [
        ("api_key.created", info.id, "tester")]


def test_the_secret_is_never_stored_in_clear(clean: None) -> None:
    _, key = new_key()
    secret = key.split("_", 2)[2]
    with db.session() as s:
        dumped = [str(r) for r in s.execute(text("SELECT * FROM api_keys")).all()]
        dumped += [str(r) for r in s.execute(text("SELECT * FROM audit_log")).all()]
    assert dumped and not any(secret in row or key in row for row in dumped)


def test_a_dev_key_is_refused_in_prod_with_both_environments_named(clean: None) -> None:
    _, key = new_key("dev", "publish")
    refused = refusal(key, "publish", "prod")
    assert refused.status == 403
    assert "'dev'" in refused.reason and "'prod'" in refused.reason
    assert key not in refused.reason and key.split("_", 2)[2] not in refused.reason
    # and a refused use is not a use
    assert rows(select(ApiKey.last_used_at)) == [(None,)]


def test_a_key_is_refused_for_another_scope(clean: None) -> None:
    _, key = new_key("prod", "read")
    refused = refusal(key, "answers", "prod")
    assert refused.status == 403 and "'read'" in refused.reason and "'answers'" in refused.reason


def test_a_revoked_key_is_refused(clean: None) -> None:
    info, key = new_key("prod", "answers")
    authenticate(key, "answers", "prod")
    with db.session() as s:
        revoked = keys.revoke(s, info.id)
    assert revoked.revoked_at is not None
    refused = refusal(key, "answers", "prod")
    assert refused.status == 401 and "revoked" in refused.reason
    # revoking again keeps the first time; an unknown id is a LookupError
    with db.session() as s:
        assert keys.revoke(s, info.id).revoked_at == revoked.revoked_at
        with pytest.raises(LookupError):
            keys.revoke(s, "0123456789abcdef")
    assert [r[0] for r in rows(select(AuditLog.action).order_by(AuditLog.id))] == [
        "api_key.created", "api_key.revoked"]


def test_tampered_malformed_and_unknown_keys_are_refused(clean: None) -> None:
    info, key = new_key()
    last = key[-1]
    tampered = key[:-1] + ("A" if last != "A" else "B")
    other_id = key.replace(info.id, "0" * 16)
    for presented in (tampered, other_id):
        refused = refusal(presented)
        assert (refused.status, refused.reason) == (401, "unknown API key")
    for presented in ("", "hk_", "Bearer " + key, key.replace("hk_", "xk_"), f"hk_{info.id}", key + " x",
                      "eyJhbGciOiJSUzI1NiJ9.e30.sig", key.upper()):
        refused = refusal(presented)
        assert refused.status == 401, presented
        assert key.split("_", 2)[2] not in refused.reason


def test_create_refuses_unknown_environments_and_scopes(clean: None) -> None:
    with db.session() as s:
        with pytest.raises(ValueError, match="environment 'staging'"):
            keys.create(s, environment="staging", scope="publish")
        with pytest.raises(ValueError, match="scope 'admin'"):
            keys.create(s, environment="dev", scope="admin")
    assert rows(select(ApiKey.id)) == []


def test_list_keys_shows_every_key_without_its_secret(clean: None) -> None:
    first, _ = new_key("dev", "publish", "a")
    second, _ = new_key("prod", "read", "b")
    with db.session() as s:
        listed = keys.list_keys(s)
    assert [(k.id, k.environment, k.scope, k.label) for k in listed] == [
        (first.id, "dev", "publish", "a"), (second.id, "prod", "read", "b")]


# --- the CLI ------------------------------------------------------------------------------------------

def herald(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_cli_creates_lists_and_revokes_a_key(clean: None) -> None:
    # when a key is created on the command line
    created = herald("keys", "create", "--environment", "prod", "--scope", "answers", "--label", "ticketing")
    assert created.returncode == 0, created.stderr
    key = next(word for word in created.stdout.split() if word.startswith("hk_"))
    assert "not be shown again" in created.stdout
    # then it works for its scope and environment
    info = authenticate(key, "answers", "prod")
    # and the list shows it, never its secret
    listed = herald("keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["id"], entry["environment"], entry["scope"], entry["label"]) == (
        info.id, "prod", "answers", "ticketing")
    assert entry["last_used_at"] is not None and entry["revoked_at"] is None
    table = herald("keys", "list")
    assert table.returncode == 0 and info.id in table.stdout and key not in table.stdout
    # when it is revoked
    revoked = herald("keys", "revoke", info.id)
    assert revoked.returncode == 0, revoked.stderr
    # then it is refused
    assert refusal(key, "answers", "prod").status == 401
    revoked_at = json.loads(herald("keys", "list", "--json").stdout)[0]["revoked_at"]
    assert datetime.fromisoformat(revoked_at) <= datetime.now(UTC)


def test_cli_revokes_a_leaked_key_given_whole(clean: None) -> None:
    info, key = new_key("prod", "publish")
    revoked = herald("keys", "revoke", key)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"key {info.id} (publish in prod) revoked at ")
    assert key.split("_", 2)[2] not in revoked.stdout + revoked.stderr
    assert refusal(key).reason == f"API key {info.id} was revoked"


@pytest.mark.parametrize(("args", "reason"), [
    (("keys", "create", "--environment", "staging", "--scope", "publish"), "unknown environment 'staging'"),
    (("keys", "create", "--environment", "dev", "--scope", "admin"), "unknown scope 'admin'"),
    (("keys", "revoke", "0123456789abcdef"), "no API key '0123456789abcdef'"),
])
def test_cli_bad_input_exits_2_with_one_line(clean: None, args: tuple[str, ...], reason: str) -> None:
    result = herald(*args)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("herald: ") and reason in line
    assert rows(select(ApiKey.id)) == []
