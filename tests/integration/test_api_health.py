"""`herald api` as a process: it serves /healthz, and /readyz says 503 with what is down when the broker is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.integration.conftest import DATA_DIR, ROOT, track_log, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def herald_api(**env: str) -> Iterator[str]:
    """A real `herald api` process on a free port of loopback (its default address); yields its base URL."""
    port = free_port()
    log = track_log(DATA_DIR / f"api-{port}.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port)], cwd=ROOT,
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), timeout_s=30, message="herald api answering")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses something listens on at ``port`` (Linux /proc/net/tcp: state 0A is LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_ready_when_the_database_and_broker_answer() -> None:
    with herald_api() as url:
        assert listening_addresses(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}  # loopback unless told otherwise
        answer = httpx.get(f"{url}/readyz", timeout=10)
        assert answer.status_code == 200
        assert answer.json() == {"status": "ready", "database": "ok", "broker": "ok"}
        assert httpx.get(f"{url}/openapi.json", timeout=10).json()["info"]["title"] == "herald"
        assert httpx.get(f"{url}/docs", timeout=10).status_code == 200


def test_not_ready_when_the_broker_is_unreachable() -> None:
    closed = free_port()  # nothing listens there
    with herald_api(HERALD_BROKER_URL=f"redis://:s3cret-pw@127.0.0.1:{closed}/0") as url:
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        answer = httpx.get(f"{url}/readyz", timeout=30)
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "unavailable" and body["database"] == "ok"
        assert body["broker"].startswith("unreachable")
        assert "s3cret-pw" not in answer.text


def test_not_ready_when_the_database_is_unreachable() -> None:
    closed = free_port()
    with herald_api(HERALD_DATABASE_URL=f"postgresql+psycopg://herald:db-s3cret@127.0.0.1:{closed}/herald") as url:
        answer = httpx.get(f"{url}/readyz", timeout=30)
        assert answer.status_code == 503
        assert answer.json()["database"].startswith("unreachable") and answer.json()["broker"] == "ok"
        assert "db-s3cret" not in answer.text
