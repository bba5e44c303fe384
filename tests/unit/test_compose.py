"""docker-compose.yml as a file: a service per pool and channel, only settings herald reads, ports on localhost only,
no example password (its commands run the way the containers run them: tests/integration/test_deployment.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from herald import channels
from herald.lanes import POOLS, pool_queues
from herald.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
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


def test_every_herald_service_needs_an_action_key_of_its_own_and_none_is_given() -> None:
    services = herald_services()
    assert {"api", "flower", "deliver-fcm"} <= set(services)
    for name in services:
        assert SERVICES[name]["environment"]["HERALD_ACTION_KEYS"].startswith("${HERALD_ACTION_KEYS:?"), name
