"""herald's metrics on the embedded default (SQLite files, the SQLite broker), no services.

The delivery worker's counters go through prometheus_client's multiprocess files and are summed by whoever
serves the scrape; the gauges are read from the database and the broker at scrape time. The same metrics run
on Postgres, Redis and worker processes in tests/integration/test_metrics.py.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

import herald.metrics
import schedules.metrics
from herald import db, deadletters, inventory
from herald.channels.types import Result
from herald.models import (
    Base,
    Delivery,
    Device,
    EventRow,
    Incident,
    IncidentPage,
    Notification,
    Outbox,
    Person,
    WebhookEndpoint,
    WebhookMessage,
    utcnow,
)
from schedules.runs import record_run
from tests.builders import Env, env_override

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def env() -> Iterator[Env]:
    yield from env_override()


@pytest.fixture
def embedded(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded default in a folder of its own, with a metrics directory no other test wrote to."""
    env["HERALD_DATA_DIR"] = str(tmp_path / "data")
    env["HERALD_METRICS_DIR"] = str(tmp_path / "metrics")
    # a fresh multiprocess value class, so this process's counters start in this test's directory
    monkeypatch.setattr(herald.metrics, "_made", None)
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    db.reset_engine()
    Base.metadata.create_all(db.engine())
    yield tmp_path / "metrics"
    db.reset_engine()


def scrape(*, cluster: bool = True) -> Samples:
    text = generate_latest(schedules.metrics.registry(cluster=cluster)).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def sent_delivery(*, published_s_before: float, flow_type: str = "flow.failed") -> int:
    """One delivery target sent now, of an event whose outbox row was written ``published_s_before`` ago."""
    now = utcnow()
    event_id = uuid.uuid4()
    with db.session() as s:
        s.add(Person(id="ana", name="Ana"))
        s.add(EventRow(id=event_id, type=flow_type, flow="failure", source="urn:test", environment="prod",
                       severity="critical", idempotency_key=str(event_id), occurred_at=now, data={},
                       received_at=now - timedelta(seconds=1)))
        s.add(Outbox(id=event_id, idempotency_key=str(event_id), envelope={},
                     created_at=now - timedelta(seconds=published_s_before)))
        s.flush()
        device = Device(person_id="ana", channel="fcm", token="t")
        notification = Notification(event_id=event_id, person_id="ana", route="r", reason="test")
        s.add_all([device, notification])
        s.flush()
        delivery = Delivery(notification_id=notification.id, event_id=event_id, device_id=device.id, channel="fcm",
                            batch_id=uuid.uuid4(), status="sent", sent_at=now)
        s.add(delivery)
        s.flush()
        return delivery.id


def test_a_batch_is_counted_by_outcome_and_its_sent_targets_timed_from_publish(embedded: Path) -> None:
    # given a target sent 4 s after its event was published
    delivery_id = sent_delivery(published_s_before=4.0)
    # when the delivery worker counts its batch's results
    herald.metrics.delivered("fcm", [Result(delivery_id, "sent"), Result(delivery_id + 1, "transient"),
                                     Result(delivery_id + 2, "transient"), Result(delivery_id + 3, "deferred")])
    # then a scrape (another registry, reading the files) has each outcome and the publish-to-sent time
    assert list(embedded.glob("*.db")), "nothing written to the multiprocess directory"
    samples = scrape(cluster=False)
    assert value(samples, "herald_deliveries_total", channel="fcm", outcome="sent") == 1
    assert value(samples, "herald_deliveries_total", channel="fcm", outcome="transient") == 2
    assert value(samples, "herald_deliveries_total", channel="fcm", outcome="deferred") == 1
    assert value(samples, "herald_publish_to_sent_seconds_count", flow="failure", severity="critical") == 1
    assert value(samples, "herald_publish_to_sent_seconds_sum", flow="failure", severity="critical") == \
        pytest.approx(4.0, abs=0.5)
    assert value(samples, "herald_publish_to_sent_seconds_bucket", flow="failure", severity="critical",
                 le="2.5") == 0
    assert value(samples, "herald_publish_to_sent_seconds_bucket", flow="failure", severity="critical",
                 le="5.0") == 1


def test_counting_never_fails_a_batch(embedded: Path, caplog: pytest.LogCaptureFixture) -> None:
    # given a database that cannot answer the latency query (its tables are gone)
    Base.metadata.drop_all(db.engine())
    # when a batch that sent something is counted, then nothing raises; the counter still counts, and it is said
    herald.metrics.delivered("apns", [Result(1, "sent")])
    assert value(scrape(cluster=False), "herald_deliveries_total", channel="apns", outcome="sent") == 1
    assert "delivery metrics not recorded" in caplog.text


def test_the_gauges_are_read_from_the_embedded_database_and_broker(embedded: Path) -> None:
    # given open dead letters, a credential 10 days from expiry, a sweep that succeeded, a failed webhook
    # and an unreached page of an open incident
    now = utcnow()
    deadletters.record("delivery", "2 target(s): retries exhausted")
    deadletters.record("task", "poison")
    with db.session() as s:
        inventory.declare(s, name="apns-key", kind="api_key", expires_at=now + timedelta(days=10, hours=1),
                          environment="prod", owner="team:mobile")
        record_run(s, "backlog", started_at=now, outcome="ok")
        s.add(WebhookEndpoint(id="admin", environment="prod", url="https://admin.example.com/hook",
                              secret_ref="env:HOOK"))
        s.flush()
        s.add_all([WebhookMessage(endpoint_id="admin", subject="incident:1", kind="incident.resolved", payload={},
                                  status="failed"),
                   WebhookMessage(endpoint_id="admin", subject="incident:2", kind="incident.resolved", payload={},
                                  status="delivered")])
        open_incident = Incident(dedup_key="k", environment="prod", title="t", severity="critical")
        resolved = Incident(dedup_key="k2", environment="prod", title="t", severity="critical", status="resolved")
        s.add_all([open_incident, resolved, Person(id="ana", name="Ana"), Person(id="ben", name="Ben")])
        s.flush()
        # unreached: ana on the open incident (counted), ana on the resolved one, ben who answered since
        for incident_id, person, answered in ((open_incident.id, "ana", False), (resolved.id, "ana", False),
                                              (open_incident.id, "ben", True)):
            event_id = uuid.uuid4()
            s.add(EventRow(id=event_id, type="flow.failed", flow="failure", source="urn:test", environment="prod",
                           severity="critical", idempotency_key=str(event_id), occurred_at=now, data={},
                           incident_id=incident_id))
            s.flush()
            s.add(Notification(event_id=event_id, person_id=person, route="r", reason="test", status="unreached",
                               unreached_at=now))
            s.add(IncidentPage(incident_id=incident_id, step=0, person_id=person, event_id=event_id,
                               outcome="answered" if answered else "unreached"))
    # when scraped
    samples = scrape()
    # then each gauge says so
    assert value(samples, "herald_metrics_source_up", source="database") == 1
    assert value(samples, "herald_metrics_source_up", source="broker") == 1
    assert value(samples, "herald_metrics_source_up", source="circuits") is None  # per process when embedded
    assert value(samples, "herald_dead_letters_open", kind="delivery") == 1
    assert value(samples, "herald_dead_letters_open", kind="task") == 1
    assert value(samples, "herald_dead_letters_open", kind="message") == 0
    assert value(samples, "herald_credential_days_left", credential="apns-key", environment="prod", kind="api_key",
                 owner="team:mobile") == 10
    assert value(samples, "herald_sweep_last_success_timestamp_seconds", sweep="backlog") == \
        pytest.approx(now.timestamp(), abs=5)
    assert value(samples, "herald_sweep_period_seconds", sweep="backlog") == 30
    assert value(samples, "herald_webhook_messages", endpoint="admin", status="failed") == 1
    assert value(samples, "herald_webhook_messages", endpoint="admin", status="delivered") == 1
    assert value(samples, "herald_webhook_messages", endpoint="admin", status="pending") == 0
    assert value(samples, "herald_unreached_pages") == 1
    assert value(samples, "herald_queue_depth", queue="ingest") == 0  # the SQLite broker: depth only
    assert value(samples, "herald_queue_age_threshold_seconds") == 300


def test_a_source_that_fails_is_said_and_the_others_still_served(embedded: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broker_down(_now: object) -> list[object]:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(schedules.metrics, "queue_metrics", broker_down)
    samples = scrape()
    assert value(samples, "herald_metrics_source_up", source="broker") == 0
    assert value(samples, "herald_metrics_source_up", source="database") == 1
    assert value(samples, "herald_dead_letters_open", kind="task") == 0
    assert not any(name == "herald_queue_depth" for name, _ in samples)


@pytest.mark.parametrize(("prefix", "pattern"), [("", ""), ("t1_ab:", "t1_ab:"), ("a*b?[c]", r"a\*b\?\[c\]")])
def test_a_key_prefix_is_matched_literally_when_circuits_are_scanned(prefix: str, pattern: str) -> None:
    assert schedules.metrics._glob(prefix) == pattern


@pytest.mark.parametrize("seconds", [0.05, 4.0, 3600.0, 7200.0])
def test_n_observations_at_once_equal_n_one_by_one(seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry, Histogram

    monkeypatch.setattr(values, "ValueClass", values.MutexValue)  # in memory: two registries side by side
    at_once, one_by_one = CollectorRegistry(), CollectorRegistry()
    for reg in (at_once, one_by_one):
        Histogram("h", "h", buckets=herald.metrics.LATENCY_BUCKETS_S, registry=reg)
    herald.metrics.observe(at_once._names_to_collectors["h"], seconds, 3)  # type: ignore[arg-type]
    for _ in range(3):
        one_by_one._names_to_collectors["h"].observe(seconds)  # type: ignore[attr-defined]

    def observed(reg: CollectorRegistry) -> Samples:
        found = {(s.name, frozenset(s.labels.items())): s.value for f in reg.collect() for s in f.samples}
        return {key: v for key, v in found.items() if not key[0].endswith("_created")}

    assert observed(at_once) == observed(one_by_one)
    assert observed(at_once)[("h_count", frozenset())] == 3


def test_files_are_named_by_host_and_pid_and_a_dead_process_loses_only_its_live_gauges(embedded: Path) -> None:
    import os

    from prometheus_client import Gauge

    # given this process counted a batch and holds a live gauge (as a future in-process gauge would)
    herald.metrics.delivered("webpush", [Result(1, "permanent")])
    Gauge("herald_test_live", "a live gauge", multiprocess_mode="livesum", registry=None).set(3)
    me = herald.metrics.process_id()
    assert me.endswith(f"-{os.getpid()}") and "_" not in me
    assert {p.name for p in embedded.glob("*.db")} == {f"counter_{me}.db", f"gauge_livesum_{me}.db"}
    # when its pool process exits: Celery sends worker_process_shutdown, which herald.app connects
    from celery.signals import worker_process_shutdown

    importlib.import_module("herald.app")  # connects the handler
    worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    # then its live gauge is gone and its count stays in the sum
    assert {p.name for p in embedded.glob("*.db")} == {f"counter_{me}.db"}
    assert value(scrape(cluster=False), "herald_deliveries_total", channel="webpush", outcome="permanent") == 1
