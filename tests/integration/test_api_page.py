"""/app/: the responder page a Web Push notification and a sign-in link open, and the VAPID key it subscribes with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from herald.settings import get_settings
from tests.integration.apiclient import api_client


@pytest.fixture
def client(clean: None) -> Iterator[TestClient]:
    yield from api_client()


def test_the_page_and_its_scripts_are_served_under_a_strict_policy(client: TestClient) -> None:
    redirect = client.get("/app", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/app/"
    page = client.get("/app/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert '<script src="/app/app.js"' in page.text
    for path, needle in (("/app/app.js", "/v1/me/notifications"), ("/app/sw.js", "notificationclick"),
                         ("/app/app.css", "body")):
        served = client.get(path)
        assert served.status_code == 200 and needle in served.text, path
    assert "innerHTML" not in client.get("/app/app.js").text  # text nodes only


def test_the_vapid_public_key_is_published_when_configured(client: TestClient, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from herald.channels import vapid

    assert client.get("/v1/webpush/key").status_code == 404
    public = vapid.generate(tmp_path / "vapid.pem")
    monkeypatch.setenv("HERALD_WEBPUSH_VAPID_KEY_FILE", str(tmp_path / "vapid.pem"))
    get_settings.cache_clear()
    try:
        answer = client.get("/v1/webpush/key")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert answer.status_code == 200 and answer.json() == {"key": public}
    assert "PRIVATE" not in answer.text
