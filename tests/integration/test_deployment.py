"""The compose files run herald's own commands and healthchecks: check them the way the containers run them, against
the test session's Postgres and Redis (the files themselves: tests/unit/test_compose.py).

A container's healthcheck runs in the container: ``$HOSTNAME`` is the host name Celery's ``%h`` gives, and a worker
is PID 1 there. Here each check runs as written, with ``$HOSTNAME`` this machine's name; where a check names the
worker's PID (1) or the port, the test swaps in the process it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.compose import FILES, herald_services, render
from tests.integration.conftest import DATA_DIR, ROOT, Workers, track_log, wait_until

COMPOSE = render("docker-compose.yml")
SERVICES = COMPOSE["services"]
# where `celery` and `herald` are, as on the image's PATH
BIN = str(Path(sys.executable).parent)
# `celery inspect ping` waits its whole timeout for replies: here 4 s, not the 10 s a container's check gives it
SHORT_WAIT = ("-t 10", "-t 4")


def test_each_service_command_is_accepted_by_the_cli() -> None:
    # the same commands the containers run, in both files, asked for their help (nothing starts)
    commands = {tuple(svc["command"]) for name in FILES for svc in herald_services(render(name)).values()}
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "cli", *command, "--help"], cwd=ROOT,
                              env=os.environ.copy(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command}: {done.stderr}"


def healthcheck(service: str, *replace: tuple[str, str], timeout_s: float = 60) -> int:
    """Run a service's healthcheck as Docker would (CMD-SHELL through /bin/sh), with this host's $HOSTNAME."""
    kind, *words = SERVICES[service]["healthcheck"]["test"]
    for old, new in replace:
        assert any(old in word for word in words), f"{service}'s healthcheck has no {old!r}"
        words = [word.replace(old, new) for word in words]
    argv = ["/bin/sh", "-c", words[0]] if kind == "CMD-SHELL" else words
    env = {**os.environ, "HOSTNAME": socket.gethostname(), "PATH": f"{BIN}:{os.environ['PATH']}"}
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=timeout_s).returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def herald(*argv: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A herald process for the length of a test, its output in the session's logs."""
    log = track_log(DATA_DIR / f"{argv[0]}-{os.getpid()}-{free_port()}.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", *argv], cwd=ROOT, env={**os.environ, **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_a_worker_healthcheck_answers_for_its_own_node_only(workers: Workers) -> None:
    # given the retry pool's worker (in its container it is PID 1: here its node carries its real PID)
    proc = workers.start("retry", concurrency=1)
    ping_self = ("retry-1@", f"retry-{proc.pid}@")
    # then its healthcheck passes once it is up, and the check of a pool with no worker fails
    wait_until(lambda: healthcheck("retry", ping_self, SHORT_WAIT) == 0, timeout_s=90,
               message="the retry worker's ping")
    assert healthcheck("sweeps", ("sweeps-1@", f"sweeps-{proc.pid}@"), SHORT_WAIT) != 0
    # and a worker frozen (no longer consuming) fails its check
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        assert healthcheck("retry", ping_self, SHORT_WAIT) != 0
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def test_beat_healthcheck_passes_while_beat_ticks_and_fails_once_it_stops(clean: None, tmp_path: Path) -> None:
    with herald("beat", env={"HERALD_DATA_DIR": str(tmp_path)}) as beat:
        wait_until(lambda: healthcheck("beat", SHORT_WAIT) == 0, timeout_s=90, message="beat answering its healthcheck")
        os.killpg(beat.pid, signal.SIGSTOP)
        assert healthcheck("beat", SHORT_WAIT) != 0


def test_api_healthcheck_passes_against_the_running_api() -> None:
    port = free_port()
    with herald("api", "--port", str(port)):
        wait_until(lambda: healthcheck("api", (":8080/", f":{port}/")) == 0, timeout_s=60,
                   message="the api's healthcheck")
    assert healthcheck("api", (":8080/", f":{port}/")) != 0


def test_flower_healthcheck_passes_without_credentials() -> None:
    # Flower runs behind basic auth; its health URL answers without (the check carries no password)
    port = free_port()
    with herald("flower", "--port", str(port), env={"HERALD_FLOWER_BASIC_AUTH": "ops:" + "p" * 24}):
        wait_until(lambda: healthcheck("flower", (":5555/", f":{port}/")) == 0, timeout_s=90,
                   message="Flower's healthcheck")


@pytest.mark.parametrize("name", FILES)
def test_every_healthcheck_program_is_installed(name: str) -> None:
    # what each check of a herald service runs exists where the image puts herald's commands
    for service, svc in herald_services(render(name)).items():
        check = svc.get("healthcheck")
        if check:
            kind, *words = check["test"]
            program = (words[0].split()[0] if kind == "CMD-SHELL" else words[0])
            assert program == "python" or (Path(BIN) / program).exists(), f"{service}: {program}"


def test_flower_refuses_to_start_without_authentication() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HERALD_FLOWER_BASIC_AUTH"}
    done = subprocess.run([sys.executable, "-m", "cli", "flower"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "HERALD_FLOWER_BASIC_AUTH" in done.stderr


def test_cli_says_what_to_do_when_the_database_is_missing_or_unmigrated(tmp_path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    fresh = subprocess.run([sys.executable, "-m", "cli", "events", "list"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env={**base, "HERALD_DATA_DIR": str(tmp_path)})
    assert fresh.returncode == 3
    assert fresh.stderr.strip().endswith("run `herald migrate`")
    down = subprocess.run([sys.executable, "-m", "cli", "events", "list"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={**base, "HERALD_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5999/x"})
    assert down.returncode == 3 and down.stderr.startswith("herald: database unreachable: connection failed")


def test_a_database_that_accepts_and_never_answers_fails_the_command_instead_of_hanging_it() -> None:
    # given a "database" that completes the TCP handshake (the kernel's backlog) and never says a word
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/x"
        base = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        # when a command needs it, with a one-second connect timeout
        done = subprocess.run([sys.executable, "-m", "cli", "events", "list"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60,
                              env={**base, "HERALD_DATABASE_URL": url, "HERALD_DATABASE_CONNECT_TIMEOUT_S": "1"})
    # then it gives up and says why (libpq's own words), where it used to wait for good
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("herald: database unreachable: connection timeout expired"), done.stderr


def test_flower_refuses_a_short_or_example_password() -> None:
    for auth in ("ops:change-me", "ops:", "ops:short"):
        done = subprocess.run([sys.executable, "-m", "cli", "flower"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "HERALD_FLOWER_BASIC_AUTH": auth})
        assert done.returncode == 2
        assert done.stderr.splitlines() == ["herald: HERALD_FLOWER_BASIC_AUTH: the password needs at least 12 "
                                            "characters (for example: openssl rand -hex 16)"]
