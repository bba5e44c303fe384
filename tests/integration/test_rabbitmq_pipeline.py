"""RabbitMQ as a production broker: quorum queues, publisher confirms, the whole pipeline end to end.

Each test session gets a virtual host of its own (rabbitmqctl), so parallel sessions never share a queue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ROOT, SESSION, Workers, wait_until
from tests.integration.helpers import all_done

pytestmark = pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (a local RabbitMQ)")


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


@pytest.fixture
def amqp_env() -> Iterator[dict[str, str]]:
    vhost = f"herald_{SESSION}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield {"HERALD_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}"}
    finally:
        rabbitmqctl("delete_vhost", vhost)


def queue_types(vhost: str) -> dict[str, str]:
    listing = rabbitmqctl("list_queues", "-p", vhost, "name", "type", "durable")
    return {name: f"{kind} durable={durable}" for name, kind, durable in
            (line.split("\t") for line in listing.strip().splitlines()[1:] if "\t" in line)}


def test_events_published_on_rabbitmq_are_delivered_through_quorum_queues(
        amqp_env: dict[str, str], workers: Workers, sample_directory: None) -> None:
    # given the whole pipeline on RabbitMQ
    workers.start("all", concurrency=2, kind="threads", beat=True, env=amqp_env)
    # when a producer publishes directly (publisher confirms on)
    done = subprocess.run([sys.executable, "-c",
                           "from producers import publish, artifact_deployed\n"
                           "for i in range(3):\n"
                           "    event = artifact_deployed(f'orders-api-{i}', kind='api', environment='test')\n"
                           "    print(publish(event))\n"],
                          cwd=ROOT, env={**os.environ, **amqp_env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ids = [uuid.UUID(line) for line in done.stdout.split()]
    # then every event goes through every stage and every target ends terminal
    wait_until(lambda: all_done(ids), timeout_s=90, message="every event delivered over RabbitMQ")
    # and herald's queues are durable quorum queues
    vhost = amqp_env["HERALD_BROKER_URL"].rsplit("/", 1)[1]
    types = queue_types(vhost)
    for queue in ("ingest", "enrich", "resolve", "deliver.fcm", "retry", "sweeps"):
        assert types.get(queue) == "quorum durable=true", types
