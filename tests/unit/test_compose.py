"""The compose files as files (docker-compose.yml, and docker-compose.rabbitmq.yml with RabbitMQ as the broker):
a service per pool of herald.lanes.POOLS, only settings herald reads, ports on localhost only, a healthcheck on
every long-running service that names something that exists, no example password. Their commands and
healthchecks run the way the containers run them: tests/integration/test_deployment.py.
"""

from __future__ import annotations

import re
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from herald import channels
from herald.lanes import POOLS, pool_queues, takes_a_lane
from herald.settings import Settings
from tests.compose import (
    FILES,
    OPERATOR_ENV,
    ROOT,
    MissingVariable,
    herald_services,
    option,
    raw,
    render,
    shell_words,
    worker_pools,
)

COMPOSE = {name: render(name) for name in FILES}
DOCKERFILE = (ROOT / "Dockerfile").read_text()

each_file = pytest.mark.parametrize("name", FILES)


def long_running(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every service but the one-shots (``migrate``: it runs, exits, and the others wait for its success)."""
    return {name: svc for name, svc in compose["services"].items() if svc.get("restart") != "no"}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes: the path in the container -> the named volume mounted there."""
    found: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


@each_file
def test_every_pool_has_its_own_service_and_every_service_names_a_real_pool(name: str) -> None:
    pools = worker_pools(COMPOSE[name])
    assert sorted(pools.values()) == sorted(POOLS), f"{name}: one worker service per pool of herald.lanes.POOLS"
    for pool in pools.values():
        assert pool_queues(pool)


@each_file
def test_every_registered_channel_has_its_deliver_service(name: str) -> None:
    services = herald_services(COMPOSE[name])
    for spec in channels.specs():
        assert services[f"deliver-{spec.name}"]["command"] == ["worker", "--pool", spec.queue], spec.name


@each_file
def test_compose_sets_only_settings_herald_reads(name: str) -> None:
    known = {f"HERALD_{field.upper()}" for field in Settings.model_fields} | {"HERALD_FLOWER_BASIC_AUTH"}
    for spec in channels.specs():
        known |= {f"HERALD_{spec.name.upper()}_{field.upper()}" for field in spec.settings.model_fields}
        known.add(f"HERALD_BACKEND_{spec.name.upper()}")
    for service, svc in COMPOSE[name]["services"].items():
        for var in svc.get("environment", {}):
            if var.startswith("HERALD_"):
                assert var in known, f"{name} {service}: {var} is not a herald setting"


@each_file
def test_compose_publishes_every_port_on_localhost_only(name: str) -> None:
    published = {service: svc["ports"] for service, svc in COMPOSE[name]["services"].items() if svc.get("ports")}
    assert {"flower", "api"} <= set(published)
    for service, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} {service} publishes {port} on every interface"
    # Flower and the api listen on every interface of their container (else the published port reaches nothing)
    for service in ("flower", "api"):
        command = COMPOSE[name]["services"][service]["command"]
        for option_name in ("--address", "--host"):
            if option_name in command:
                assert option(command, option_name) == "0.0.0.0"


@each_file
def test_compose_flower_needs_a_password_and_has_no_example_one(name: str) -> None:
    text = (ROOT / name).read_text()
    assert "change-me" not in text
    flower = raw(name)["services"]["flower"]["environment"]["HERALD_FLOWER_BASIC_AUTH"]
    assert flower.startswith("${FLOWER_BASIC_AUTH:?")
    assert "change-me" not in (ROOT / "README.md").read_text()


@each_file
def test_every_herald_service_needs_an_action_key_of_its_own_and_none_is_given(name: str) -> None:
    services = herald_services(raw(name))
    assert {"api", "flower", "deliver-fcm", "beat"} <= set(services)
    for service, svc in services.items():
        assert svc["environment"]["HERALD_ACTION_KEYS"].startswith("${HERALD_ACTION_KEYS:?"), service
    with pytest.raises(MissingVariable, match="HERALD_ACTION_KEYS"):
        render(name, {"FLOWER_BASIC_AUTH": "ops:" + "f" * 32, "RABBITMQ_PASSWORD": "r" * 32})


@each_file
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    for service, svc in long_running(COMPOSE[name]).items():
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} {service} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} {service}"


def _node_of(pool: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The node name `herald worker --pool POOL` gives its worker when it is PID 1 (what cli/workers.py passes
    to Celery's ``-n``), with the ``%h`` Celery expands to the host name."""
    import os

    from cli import workers
    from herald.app import app as celery_app

    seen: list[list[str]] = []
    monkeypatch.setattr(os, "getpid", lambda: 1)
    monkeypatch.setattr(celery_app, "worker_main", seen.append)
    workers.worker(pool=pool, concurrency=None, kind=None, beat=False, loglevel="INFO")
    return option(seen[0], "-n")


@each_file
def test_each_worker_healthcheck_pings_its_own_node(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The image's entrypoint runs herald itself as PID 1 (exec form, and no service adds an init process), so the
    # worker's node is <pool>-1@<container hostname>: Docker sets $HOSTNAME to the name gethostname() returns.
    assert '\nENTRYPOINT ["herald"]\n' in DOCKERFILE
    services = herald_services(COMPOSE[name])
    assert not [service for service, svc in services.items() if svc.get("init")]
    for service, pool in worker_pools(COMPOSE[name]).items():
        test = services[service]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL", f"{service}: $HOSTNAME needs a shell"
        words = shell_words(test)
        assert words[:5] == ["celery", "-A", "herald.app", "inspect", "ping"], service
        assert option(words, "-d") == _node_of(pool, monkeypatch).replace("%h", "$HOSTNAME"), service
        assert float(option(words, "-t")) < _seconds(services[service]["healthcheck"]["timeout"])


def test_beat_healthcheck_pings_the_node_celery_beat_answers_on() -> None:
    from celery.beat import beat_nodename

    for name in FILES:
        beat = COMPOSE[name]["services"]["beat"]
        words = shell_words(beat["healthcheck"]["test"])
        assert words[:5] == ["celery", "-A", "herald.app", "inspect", "ping"]
        node = option(words, "-d").replace("$HOSTNAME", socket.gethostname())
        assert node == beat_nodename(None), f"{name}: beat answers as {beat_nodename(None)}"
    # beat answers only with remote control on, which celeryconfig turns on for every broker with a broadcast
    config = (ROOT / "celeryconfig.py").read_text()
    assert re.search(r"^beat_enable_remote_control = not broker_url\.startswith\(\"sqla\+\"\)$", config, re.M)


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def _url_check(svc: dict[str, Any]) -> Any:
    """The URL a healthcheck opens (``python -c "...urlopen('URL'...)"``), parsed."""
    words = svc["healthcheck"]["test"]
    assert words[:3] == ["CMD", "python", "-c"], words
    found = re.search(r"urlopen\('([^']+)'", words[3])
    assert found, words[3]
    return urlsplit(found.group(1))


@each_file
def test_api_healthcheck_asks_the_port_it_listens_on_for_a_route_it_serves(name: str) -> None:
    from api.app import create_app

    api = COMPOSE[name]["services"]["api"]
    url = _url_check(api)
    assert (url.hostname, url.port) == ("127.0.0.1", int(option(api["command"], "--port")))
    assert url.path in create_app().openapi()["paths"]
    assert url.path == "/healthz"


@each_file
def test_flower_healthcheck_asks_the_port_it_listens_on_for_its_health_url(name: str) -> None:
    from flower.urls import handlers

    service = COMPOSE[name]["services"]["flower"]
    url = _url_check(service)
    assert (url.hostname, url.port) == ("127.0.0.1", int(option(service["command"], "--port")))
    patterns = [spec.regex.pattern if hasattr(spec, "regex") else spec[0] for spec in handlers]
    assert any(re.fullmatch(pattern, url.path) for pattern in patterns if pattern != ".*"), url.path


def test_the_rabbitmq_file_runs_the_same_herald_services_on_rabbitmq() -> None:
    redis, rabbit = COMPOSE["docker-compose.yml"], COMPOSE["docker-compose.rabbitmq.yml"]
    assert set(herald_services(redis)) == set(herald_services(rabbit))
    for service, svc in herald_services(redis).items():
        other = herald_services(rabbit)[service]
        assert other["command"] == svc["command"], service
        assert other.get("healthcheck") == svc.get("healthcheck"), service
        url = urlsplit(other["environment"]["HERALD_BROKER_URL"])
        # amqp:// is what makes celeryconfig declare quorum queues and publish with confirms
        assert (url.scheme, url.hostname, url.port, url.path) == ("amqp", "rabbitmq", 5672, "/herald"), service
        assert "redis" not in other["depends_on"], service
        if service != "migrate":  # it needs Postgres only
            assert other["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, service
    assert "redis" not in rabbit["services"]
    broker = rabbit["services"]["rabbitmq"]
    assert broker["environment"]["RABBITMQ_DEFAULT_VHOST"] == "herald"
    assert broker["environment"]["RABBITMQ_DEFAULT_PASS"] == url.password
    assert shell_words(broker["healthcheck"]["test"])[0] == "rabbitmq-diagnostics"
    assert not broker.get("ports")
    with pytest.raises(MissingVariable, match="RABBITMQ_PASSWORD"):
        render("docker-compose.rabbitmq.yml", {k: v for k, v in OPERATOR_ENV.items() if k != "RABBITMQ_PASSWORD"})


def test_the_image_gives_its_user_a_writable_data_directory_that_beat_keeps_on_a_volume() -> None:
    data_dir = re.search(r"HERALD_DATA_DIR=(\S+)", DOCKERFILE)
    assert data_dir
    assert re.search(rf"install -d -o herald -g herald -m 700 {re.escape(data_dir.group(1))}\b", DOCKERFILE)
    for name in FILES:
        assert mounts(COMPOSE[name]["services"]["beat"])[data_dir.group(1)] in COMPOSE[name]["volumes"], name


@each_file
def test_every_herald_container_of_a_host_counts_into_one_metrics_directory(name: str) -> None:
    # the api's /metrics sums the files of the directory it sees: a deliver container's counts must be in it
    compose = COMPOSE[name]
    for service, svc in herald_services(compose).items():
        directory = svc["environment"]["HERALD_METRICS_DIR"]
        assert mounts(svc).get(directory) == "metrics", service
    # in memory (emptied when the host boots, as README's Metrics asks), writable by the image's user only
    opts = compose["volumes"]["metrics"]["driver_opts"]
    assert (opts["type"], opts["device"]) == ("tmpfs", "tmpfs"), name
    mount = dict(o.partition("=")[::2] for o in opts["o"].split(","))
    uid = re.search(r"useradd --uid (\d+) [^\n]*herald", DOCKERFILE)
    assert uid and mount["uid"] == mount["gid"] == uid.group(1), name
    assert mount["mode"] == "0700", name


@each_file
def test_the_lanes_pools_outweigh_bulk_pools_for_the_cpu(name: str) -> None:
    # a container is a cgroup of its own: a bulk worker's niceness (HERALD_BULK_NICE) orders it only against its
    # own container's processes, so the CPU weight of the containers is what lets a page through a busy host
    services = herald_services(COMPOSE[name])
    for service, pool in worker_pools(COMPOSE[name]).items():
        shares = services[service].get("cpu_shares", 1024)  # Docker's default weight
        assert shares == (10240 if takes_a_lane(pool_queues(pool)) else 1024), service
