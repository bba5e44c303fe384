"""A redis-server of the test's own, for tests that break Redis: the Redis the other tests share (and other
test sessions on the machine) is never touched."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import redis

from tests.integration.conftest import DATA_DIR, ROOT, SESSION, wait_until


class OwnRedis:
    """A redis-server on a free port, started and stopped by the test."""

    def __init__(self, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = extra
        self.start()

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes", "--dir", str(DATA_DIR),
                        "--logfile", str(DATA_DIR / f"redis-{self.port}.log"), *self.extra], check=True)
        wait_until(self.ping, timeout_s=20, message="own redis up")

    def ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(self.url).shutdown(nosave=True, now=True, force=True)
        wait_until(lambda: not self.ping(), timeout_s=20, message="own redis down")

    def restart(self) -> None:
        """What a Redis without persistence does on a restart: come back empty."""
        self.stop()
        self.start()


def serve() -> Iterator[OwnRedis]:
    """The body of a test module's ``own_redis`` fixture: ask for it before ``workers``, so that the workers
    stop first and none sees its Redis go away."""
    server = OwnRedis()
    yield server
    server.stop()


def env_for(server: OwnRedis) -> dict[str, str]:
    return {"HERALD_BROKER_URL": server.url, "HERALD_BROKER_KEY_PREFIX": f"{SESSION}:"}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


PUBLISH_DIRECT = (
    "from producers import publish, artifact_deployed\n"
    "for i in range({n}):\n"
    "    print(publish(artifact_deployed(f'api-{{i}}', kind='api', environment='dev')))\n")
