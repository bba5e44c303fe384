"""docker-compose.yml runs herald's own commands: check them the way the containers run them (the file itself:
tests/unit/test_compose.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.integration.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def herald_services() -> dict[str, list[str]]:
    return {name: svc["command"] for name, svc in SERVICES.items() if svc.get("image") == "herald:latest"}


def test_each_service_command_is_accepted_by_the_cli() -> None:
    # the same commands the containers run, asked for their help (nothing starts)
    for name, command in herald_services().items():
        done = subprocess.run([sys.executable, "-m", "cli", *command, "--help"], cwd=ROOT,
                              env=os.environ.copy(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{name}: {done.stderr}"


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


def test_flower_refuses_a_short_or_example_password() -> None:
    for auth in ("ops:change-me", "ops:", "ops:short"):
        done = subprocess.run([sys.executable, "-m", "cli", "flower"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "HERALD_FLOWER_BASIC_AUTH": auth})
        assert done.returncode == 2
        assert done.stderr.splitlines() == ["herald: HERALD_FLOWER_BASIC_AUTH: the password needs at least 12 "
                                            "characters (for example: openssl rand -hex 16)"]
