"""herald's Prometheus metrics on the real pipeline: prefork workers count, `herald metrics serve` and the API serve.

The delivery workers' pool processes write their counters into one directory (prometheus_client's multiprocess
mode); another process sums them at each scrape, and reads the gauges from Postgres and Redis. Every scrape is
checked with `promtool check metrics`, the alert rules with `promtool check rules` and `promtool test rules`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import db, directory
from herald.channels.gate import RedisState
from herald.lanes import QUEUES
from herald.models import Delivery, DeliveryAttempt, EventRow, utcnow
from producers import business_event, publish
from schedules.metrics import ClusterCollector, registry
from tests.integration.apiclient import bearer, make_key
from tests.integration.conftest import (
    DATA_DIR,
    REDIS_URL,
    ROOT,
    SAMPLE_DIRECTORY,
    SESSION,
    Workers,
    clear_broker,
    fresh_fakes,
    stop_warmly,
    track_log,
    wait_until,
)
from tests.integration.helpers import all_done, rows

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "herald-dashboard.json"
BUSY, DEAD = "fcm-busy", "fcm-dead"
BEN_IPHONE = "be" * 32

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None and not os.environ.get("CI"),
                                    reason="promtool missing: apt-get install prometheus (.ci/run does)")


@pytest.fixture
def metrics_dir() -> Iterator[Path]:
    """A metrics directory of this test's own: counters of other tests' workers are not in it."""
    path = DATA_DIR / f"metrics-{uuid.uuid4().hex[:8]}"
    with herald_env({"HERALD_METRICS_DIR": str(path)}):
        yield path


@pytest.fixture
def fake(fakes: FakeProviders, clean: None, metrics_dir: Path) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    with herald_env({"HERALD_WEBPUSH_ALLOW_LOOPBACK": "true"}):
        yield fakes


@pytest.fixture
def serve(metrics_dir: Path) -> Iterator[str]:
    """`herald metrics serve` on a free port of this machine; its /metrics URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(track_log(DATA_DIR / f"metrics-serve-{port}.log"), "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "cli", "metrics", "serve", "--port", str(port)], cwd=ROOT,
                            env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _answers(url), timeout_s=30, message="herald metrics serve listening")
        yield url
    finally:
        stop_warmly([proc], grace_s=10)
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except OSError:
        return False


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return str(answer.read().decode())


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def by(found: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of one metric, summed by the labels named (the others summed over)."""
    out: dict[tuple[str, ...], float] = {}
    for (sample, label_set), value in found.items():
        if sample == name:
            values = dict(label_set)
            key = tuple(values[label] for label in labels)
            out[key] = out.get(key, 0.0) + value
    return {key: value for key, value in out.items() if value}


def promtool(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> None:
    done = subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def load_directory(devices: dict[str, list[dict[str, Any]]]) -> None:
    spec = {
        "people": [{"id": pid, "name": pid, "devices": devs, "subscriptions": ["orders.eu"]}
                   for pid, devs in devices.items()],
        "routes": [{"id": "orders", "match": {"types": ["business.*"]}, "recipients": [{"subscribers": True}]}],
    }
    path = DATA_DIR / "metrics-directory.yaml"
    path.write_text(yaml.safe_dump(spec))
    with db.session() as s:
        directory.apply(directory.load(path), s)


def order(reference: str) -> Any:
    return business_event("order_submitted", topic="orders.eu", reference=reference, environment="prod",
                          summary=f"Order {reference} from ACME")


def attempts_by_channel_and_outcome() -> dict[tuple[str, ...], float]:
    return {(r.channel, r.outcome): r.n for r in rows(
        select(Delivery.channel, DeliveryAttempt.outcome, func.count().label("n"))
        .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
        .group_by(Delivery.channel, DeliveryAttempt.outcome))}


def _counted_all(scraped: str, engine: Any = None) -> str | None:
    """The scrape, once its send results and sent targets are as many as the rows (of ``engine``, else herald's)."""
    query = ("SELECT (SELECT count(*) FROM delivery_attempts WHERE outcome <> 'lost'), "
             "(SELECT count(*) FROM deliveries WHERE status = 'sent')")
    if engine is None:
        with db.session() as s:
            attempts, sent = s.execute(text(query)).one()
    else:
        with engine.connect() as c:
            attempts, sent = c.execute(text(query)).one()
    found = samples(scraped)
    counted = sum(by(found, "herald_deliveries_total", "outcome").values()) - \
        by(found, "herald_deliveries_total", "outcome").get(("deferred",), 0)
    timed = sum(by(found, "herald_publish_to_sent_seconds_count", "flow").values())
    return scraped if (counted, timed) == (attempts, sent) else None


def metric_names(text: str) -> set[str]:
    """Every name a scrape defines (TYPE lines: families without samples too), with its sample suffixes."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "counter":
            names.add(f"{name}_total")
        if kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "count", "sum"))
    return names


def deploy_expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    return alerts + [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@needs_promtool
def test_deliveries_counted_by_prefork_workers_equal_the_rows_on_every_scrape(
        fake: FakeProviders, workers: Workers, serve: str, metrics_dir: Path) -> None:
    # given devices on the three channels: one FCM token busy once (transient), one dead (invalid_token)
    sub = fake.webpush.subscribe()
    fake.providers["fcm"].switches.retry_after_s = 1
    fake.providers["fcm"].switches.errors[BUSY] = "UNAVAILABLE*1"
    fake.providers["fcm"].switches.dead_tokens.add(DEAD)
    load_directory({
        "ana": [{"channel": "fcm", "token": "fcm-ana"}, {"channel": "fcm", "token": DEAD}],
        "ben": [{"channel": "apns", "token": BEN_IPHONE, "environment": "sandbox", "app": "com.example.portal"},
                {"channel": "fcm", "token": BUSY}],
        "cy": [{"channel": "webpush", "subscription": sub}],
    })
    workers.start("all", env=fake.env(), concurrency=2, kind="prefork")
    # when three events are published, and scraped while the pipeline runs
    event_ids = [publish(order(f"PO-{i}")) for i in range(3)]
    promtool("check", "metrics", stdin=scrape(serve))
    wait_until(lambda: all_done(event_ids), timeout_s=180, message="all targets terminal")  # a loaded CI machine
    # then `herald metrics serve` counts what the rows say, per channel and outcome (a worker counts a batch
    # right after committing it: the last one may still be on its way when the rows are all there)
    text = wait_until(lambda: _counted_all(scrape(serve)), timeout_s=30, message="the scrape to count every row")
    promtool("check", "metrics", stdin=text)
    found = samples(text)
    counted = by(found, "herald_deliveries_total", "channel", "outcome")
    assert counted == attempts_by_channel_and_outcome()
    assert {("fcm", "sent"), ("fcm", "transient"), ("fcm", "invalid_token"), ("apns", "sent"),
            ("webpush", "sent")} <= set(counted)
    sent = {(r.flow, r.severity): r.n for r in rows(
        select(EventRow.flow, EventRow.severity, func.count().label("n")).join(Delivery)
        .where(Delivery.status == "sent").group_by(EventRow.flow, EventRow.severity))}
    assert by(found, "herald_publish_to_sent_seconds_count", "flow", "severity") == sent
    assert sum(sent.values()) == 3 * 4  # fcm-ana, ben's iPhone and FCM token, cy's browser; three events
    # the gauges are read from Postgres and Redis at the scrape
    assert by(found, "herald_metrics_source_up", "source") == {("database",): 1, ("broker",): 1, ("circuits",): 1}
    assert {q for (q,) in by(found, "herald_queue_depth", "queue")} <= set(QUEUES)
    assert ("herald_queue_depth", frozenset({("queue", "deliver.fcm")})) in found
    assert found[("herald_dead_letters_open", frozenset({("kind", "delivery")}))] == 0
    # the pool processes wrote their own files; the deploy files name only metrics herald serves
    assert len(list(metrics_dir.glob("counter_*.db"))) >= 1
    assert set(re.findall(r"herald_\w+", " ".join(deploy_expressions()))) <= metric_names(text)

    # and the API's /metrics serves the same counts, for a read key only
    from api import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        assert client.get("/metrics").status_code == 401
        answer = client.get("/metrics", headers=bearer(make_key("dev", "read")))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    promtool("check", "metrics", stdin=answer.text)
    assert by(samples(answer.text), "herald_deliveries_total", "channel", "outcome") == counted

    # and once the workers stopped, their counts stay (the files of exited processes are summed still)
    workers.stop_all()
    assert by(samples(scrape(serve)), "herald_deliveries_total", "channel", "outcome") == counted


BURST = """
from producers import publish, artifact_deployed, business_event
for i in range(3):
    publish(artifact_deployed(f"api-{i}", kind="api", environment="test"))
    publish(business_event("order_submitted", topic="orders.eu", reference=f"PO-{i}", environment="prod"))
"""


@needs_promtool
def test_on_the_embedded_default_prefork_workers_are_counted_too(tmp_path: Path) -> None:
    # given the embedded default (SQLite, no services, no metrics setting) and one prefork worker for every pool
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "PROMETHEUS_"))}
    env["HERALD_DATA_DIR"] = str(tmp_path)

    def herald(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    herald("migrate")
    herald("directory", "apply", str(SAMPLE_DIRECTORY))
    log = open(track_log(tmp_path / "worker.log"), "ab")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--pool", "all", "--concurrency", "2",
                               "--kind", "prefork"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    engine = create_engine(f"sqlite:///{tmp_path / 'herald.sqlite'}")
    try:
        # when a producer publishes a burst and every target ends
        subprocess.run([sys.executable, "-c", BURST], cwd=ROOT, env=env, check=True, timeout=120)

        def settled() -> bool:
            with engine.connect() as c:
                events = c.execute(text("SELECT count(*) FROM events WHERE status IN ('resolved', 'grouped')"))
                open_targets = c.execute(text("SELECT count(*) FROM deliveries WHERE status NOT IN "
                                              "('sent', 'failed', 'dead')"))
                return events.scalar() == 6 and open_targets.scalar() == 0

        wait_until(settled, timeout_s=180, interval_s=1, message="burst delivered on SQLite")
        # then `herald metrics show`, another process, counts what the rows say, in <data_dir>/metrics
        shown = wait_until(lambda: _counted_all(herald("metrics", "show"), engine), timeout_s=30,
                           message="the scrape to count every row")
    finally:
        stop_warmly([worker])
        log.close()
    promtool("check", "metrics", stdin=shown)
    with engine.connect() as c:
        attempts = {(channel, outcome): n for channel, outcome, n in c.execute(text(
            "SELECT d.channel, a.outcome, count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "GROUP BY d.channel, a.outcome"))}
        sent = c.execute(text("SELECT count(*) FROM deliveries WHERE status = 'sent'")).scalar()
    found = samples(shown)
    assert attempts and by(found, "herald_deliveries_total", "channel", "outcome") == attempts
    assert sum(by(found, "herald_publish_to_sent_seconds_count", "flow", "severity").values()) == sent
    assert list((tmp_path / "metrics").glob("counter_*.db"))
    assert by(found, "herald_metrics_source_up", "source") == {("database",): 1, ("broker",): 1}


def test_circuits_and_queue_age_are_read_from_redis(clean: None, metrics_dir: Path) -> None:
    # given one APNs host whose circuit opened, and one FCM host with a failure counted, still closed
    prefix = f"{SESSION}:"
    RedisState(REDIS_URL, prefix, "apns", 1, 60.0, 300.0).failed("api.sandbox.push.apple.com:443", 1, probe=False)
    RedisState(REDIS_URL, prefix, "fcm", 5, 60.0, 300.0).failed("fcm.googleapis.com", 1, probe=False)
    # and an event waiting in the ingest queue, no worker running, scraped 400 s later
    publish(order("PO-wait"))
    later = utcnow() + timedelta(seconds=400)
    try:
        from prometheus_client import generate_latest

        reg = registry(cluster=False)
        reg.register(ClusterCollector(now=lambda: later))
        found = samples(generate_latest(reg).decode())
    finally:
        clear_broker()
    # then each circuit has its state, and the queue its depth and age
    assert by(found, "herald_circuit_open", "provider", "host") == {("apns", "api.sandbox.push.apple.com:443"): 1}
    assert found[("herald_circuit_open", frozenset({("provider", "fcm"), ("host", "fcm.googleapis.com")}))] == 0
    assert found[("herald_queue_depth", frozenset({("queue", "ingest")}))] == 1
    assert found[("herald_queue_oldest_message_age_seconds", frozenset({("queue", "ingest")}))] >= 400


@needs_promtool
def test_the_alert_rules_the_scrape_config_and_the_dashboard_queries_are_valid(tmp_path: Path) -> None:
    promtool("check", "rules", "deploy/prometheus/alerts.yml")
    promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    promtool("check", "config", "--syntax-only", "prometheus.yml", cwd=PROMETHEUS)
    # every dashboard query parses as PromQL: checked as recording rules
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"herald:panel_{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool("check", "rules", str(path))
