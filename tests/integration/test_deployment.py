"""docker-compose.yml runs herald's own commands: check them the way the containers run them."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from herald import channels
from herald.lanes import POOLS, pool_queues
from herald.settings import Settings
from tests.integration.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def herald_services() -> dict[str, list[str]]:
    return {name: svc["command"] for name, svc in SERVICES.items() if svc.get("image") == "herald:latest"}


def test_every_pool_has_its_own_service_and_every_service_names_a_real_pool() -> None:
    pools = [cmd[cmd.index("--pool") + 1] for cmd in herald_services().values() if cmd[0] == "worker"]
    assert sorted(pools) == sorted(POOLS)
    for pool in pools:
        assert pool_queues(pool)


def test_every_registered_channel_has_its_deliver_service() -> None:
    services = herald_services()
    for spec in channels.specs():
        assert services.get(f"deliver-{spec.name}") == ["worker", "--pool", spec.queue], spec.name


def test_compose_sets_only_settings_herald_reads() -> None:
    known = {f"HERALD_{name.upper()}" for name in Settings.model_fields} | {"HERALD_FLOWER_BASIC_AUTH"}
    for spec in channels.specs():
        known |= {f"HERALD_{spec.name.upper()}_{name.upper()}" for name in spec.settings.model_fields}
        known.add(f"HERALD_BACKEND_{spec.name.upper()}")
    for name, svc in SERVICES.items():
        for var in svc.get("environment", {}):
            if var.startswith("HERALD_"):
                assert var in known, f"{name}: {var} is not a herald setting"


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


def test_compose_publishes_every_port_on_localhost_only() -> None:
    published = {name: svc["ports"] for name, svc in SERVICES.items() if svc.get("ports")}
    assert published, "flower publishes its port"
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    # Flower itself listens on every interface of its container (else the published port reaches nothing)
    command = SERVICES["flower"]["command"]
    assert command[command.index("--address") + 1] == "0.0.0.0"


def test_compose_flower_needs_a_password_and_has_no_example_one() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    assert SERVICES["flower"]["environment"]["HERALD_FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert "change-me" not in (ROOT / "README.md").read_text()


def test_flower_refuses_a_short_or_example_password() -> None:
    for auth in ("ops:change-me", "ops:", "ops:short"):
        done = subprocess.run([sys.executable, "-m", "cli", "flower"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "HERALD_FLOWER_BASIC_AUTH": auth})
        assert done.returncode == 2
        assert done.stderr.splitlines() == ["herald: HERALD_FLOWER_BASIC_AUTH: the password needs at least 12 "
                                            "characters (for example: openssl rand -hex 16)"]
