"""Write-back rules that need no service: backoff, the horizon, kind matching, signing, secrets and URLs."""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from herald import writeback
from herald.models import utcnow
from herald.settings import get_settings

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_backoff_doubles_within_jitter_and_is_bounded() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 640.0), (20, 3600.0)]:
        waits = [writeback.backoff_s(attempt, base_s=5.0, max_s=3600.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered: a receiver coming back is not hit by every message at once


def test_retry_after_is_a_floor_but_never_past_the_bound() -> None:
    assert writeback.backoff_s(1, base_s=5.0, max_s=3600.0, retry_after_s=120.0) == 120.0
    assert writeback.backoff_s(1, base_s=5.0, max_s=3600.0, retry_after_s=86400.0) == 3600.0


def test_no_retry_is_scheduled_past_the_horizon(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("HERALD_WEBHOOK_RETRY_HORIZON_S", "3600")
    created = utcnow()
    assert writeback.next_attempt_at(created, 1, created) is not None
    assert writeback.next_attempt_at(created, 1, created + timedelta(minutes=59, seconds=58)) is None
    assert writeback.next_attempt_at(created, 1, created + timedelta(hours=2)) is None


@pytest.mark.parametrize(("kind", "patterns", "heard"), [
    ("incident.acknowledged", ["incident.*"], True),
    ("incident.acknowledged", ["approval.*"], False),
    ("approval.expired", ["approval.approved", "approval.expired"], True),
    ("approval.expired", ["*"], True),
    ("incident.resolved", ["incident.re*"], True),
    ("incident.resolved", ["Incident.*"], False),  # case matters: kinds are lower case
    ("incident.resolved", [], False),
])
def test_kind_matching(kind: str, patterns: list[str], heard: bool) -> None:
    assert writeback.kind_matches(kind, patterns) is heard


def test_a_kinds_pattern_that_matches_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="matches no write-back kind"):
        writeback.WebhookSpec(id="a", environment="prod", url="https://admin.example.com/h", secret="env:X",
                              kinds=["incidents.*"])


def test_the_signed_headers_verify_with_standardwebhooks() -> None:
    body = '{"type":"incident.resolved"}'
    headers = writeback.signed_headers(SECRET, "msg_1", body, utcnow())
    assert Webhook(SECRET).verify(body, headers) == {"type": "incident.resolved"}
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(body.replace("resolved", "acknowledged"), headers)


def test_a_secret_is_read_from_a_variable_or_a_regular_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_UNIT_WEBHOOK_SECRET", SECRET)
    assert writeback.read_secret("env:HERALD_UNIT_WEBHOOK_SECRET") == SECRET
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    assert writeback.read_secret(f"file:{path}") == SECRET
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes: a plain open() would block
    with pytest.raises(writeback.WebhookRefused, match="not a regular file"):
        writeback.read_secret(f"file:{fifo}")


def test_a_bad_secret_is_refused_without_being_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_UNIT_WEBHOOK_SECRET", "whsec_not base64 at all!")
    with pytest.raises(writeback.WebhookRefused) as refused:
        writeback.read_secret("env:HERALD_UNIT_WEBHOOK_SECRET")
    assert "not base64" not in str(refused.value)
    monkeypatch.setenv("HERALD_UNIT_WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"8 bytes!").decode())
    with pytest.raises(writeback.WebhookRefused, match="24 to 64 bytes"):
        writeback.read_secret("env:HERALD_UNIT_WEBHOOK_SECRET")
    monkeypatch.delenv("HERALD_UNIT_WEBHOOK_SECRET")
    with pytest.raises(writeback.WebhookRefused, match="HERALD_UNIT_WEBHOOK_SECRET is not set"):
        writeback.read_secret("env:HERALD_UNIT_WEBHOOK_SECRET")


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://admin.example.com/herald", True),
    ("https://203.0.113.9/h", False),  # documentation range: not global
    ("https://8.8.8.8/h", True),
    ("http://admin.example.com/h", False),
    ("https://192.168.1.10/h", False),
    ("https://[fe80::1]/h", False),
    ("https://[::ffff:127.0.0.1]/h", False),
    ("http://localhost:8765/h", False),
    ("ftp://admin.example.com/h", False),
])
def test_urls(url: str, allowed: bool) -> None:
    if allowed:
        writeback.check_url(url, allow_loopback=False)
    else:
        with pytest.raises(writeback.WebhookRefused):
            writeback.check_url(url, allow_loopback=False)


def test_loopback_only_when_allowed_and_private_never() -> None:
    writeback.check_url("http://127.0.0.1:8765/h", allow_loopback=True)
    writeback.check_url("http://localhost:8765/h", allow_loopback=True)
    with pytest.raises(writeback.WebhookRefused, match="HERALD_WEBHOOK_ALLOW_LOOPBACK"):
        writeback.check_url("http://127.0.0.1:8765/h", allow_loopback=False)
    with pytest.raises(writeback.WebhookRefused, match="not public"):
        writeback.check_url("https://10.0.0.1/h", allow_loopback=True)


def test_the_receiving_example_in_the_docs_verifies_and_applies_once(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # given the receiver docs/webhooks.md shows the admin platform, loaded as a module (its server not started)
    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("ADMIN_WEBHOOK_SECRET", SECRET)
    example: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(code, "docs/webhooks.md", "exec"), example)
    receive = example["receive"]
    assert callable(receive)
    body = '{"data":{"id":12},"environment":"prod","subject":"incident:12","type":"incident.resolved"}'
    headers = writeback.signed_headers(SECRET, "msg_7", body, utcnow())
    # when herald's signed request arrives twice, and a tampered copy once
    assert receive(body.encode(), headers) == 204
    assert receive(body.encode(), headers) == 204
    assert receive(body.replace("12", "13").encode(), headers) == 401
    # then the change was applied once, and the tampered one not at all
    assert capsys.readouterr().out.splitlines() == ['incident.resolved incident:12 {"id": 12}']
