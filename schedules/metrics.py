"""What a scrape reads from the database and the broker at that moment: herald's state as gauges.

Gauges kept in a worker's memory would be wrong under prefork pools (which process's value?) and
stale once that worker dies; these are read where they live, by whoever serves the scrape
(``herald metrics serve``, the API's ``/metrics``), through :class:`ClusterCollector`:

- queues (the broker, as the backlog sweep measures them: schedules.queues): ``herald_queue_depth``,
  ``herald_queue_oldest_message_age_seconds`` (Redis and RabbitMQ; the embedded broker tells the depth only),
  and the age threshold of the ``processing_delayed`` condition;
- circuits (Redis, where herald/channels/gate.py keeps them for the whole fleet): ``herald_circuit_open``
  per provider host, 1 from the moment it opens until an answer closes it (its probe included), 0 for a
  host with failures counted but not open; a host that never failed has no series. The embedded default
  keeps circuits in each process's memory: no series there;
- the database: open dead letters by kind, unreached pages, days left per credential, each sweep's
  last success and whether it is overdue (the rule of ``herald status``), write-back messages per
  endpoint and status.

Each source is read on its own: ``herald_metrics_source_up{source}`` is 0 for one that failed, and the
others are still served. Every serving process reads the same values: a scrape of several endpoints
gets the same series from each (alerts take ``max by``), or serve them from one
(``herald metrics serve --no-cluster`` on the others).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from herald import db, deadletters, unreached
from herald import metrics as process_metrics
from herald.inventory import days_left
from herald.lanes import QUEUES
from herald.models import Credential, WebhookMessage, utcnow
from herald.settings import get_settings
from schedules import status
from schedules.queues import queue_stats

__all__ = ["CONTENT_TYPE_LATEST", "ClusterCollector", "circuits", "exposition", "registry"]

log = logging.getLogger(__name__)

DEAD_LETTER_KINDS = ("task", "message", "delivery")
WEBHOOK_STATUSES = ("pending", "delivered", "failed", "cancelled")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

Read = Callable[[datetime], Iterable[Metric]]


def gauge(name: str, documentation: str, labels: Iterable[str] = (),
          values: Iterable[tuple[Iterable[str], float]] = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


# --- the broker ---------------------------------------------------------------------------------


def queue_metrics(now: datetime) -> list[Metric]:
    stats = queue_stats(list(QUEUES), now=now.timestamp())
    return [
        gauge("herald_queue_depth", "Messages waiting in the queue, plus those taken and not yet acknowledged "
              "where the broker tells them (Redis).", ["queue"], [([q.queue], q.depth) for q in stats]),
        gauge("herald_queue_oldest_message_age_seconds", "Age of the oldest waiting message (its publish stamp); "
              "no series for an empty queue or a broker that does not tell (the embedded one).", ["queue"],
              [([q.queue], q.oldest_age_s) for q in stats if q.oldest_age_s is not None]),
        gauge("herald_queue_age_threshold_seconds", "HERALD_BACKLOG_AGE_THRESHOLD_S: a queue whose oldest message "
              "is older is delayed (the processing_delayed condition).",
              values=[((), get_settings().backlog_age_threshold_s)]),
    ]


def _glob(text_: str) -> str:
    """``text_`` matched literally in a Redis SCAN pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text_)


def circuits(url: str, prefix: str) -> dict[tuple[str, str], bool]:
    """Every provider host with a circuit state in Redis: (provider, host) -> open (or waiting for its probe).

    herald/channels/gate.py keeps ``<prefix>herald:gate:<provider>:circuit:<host>:<name>``; ``open_until`` is
    set when the circuit opens and deleted, with the failure count, when the host answers again.
    """
    import redis

    timeout = get_settings().publish_timeout_s
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    base = f"{prefix}herald:gate:"
    found: dict[tuple[str, str], bool] = {}
    try:
        for raw in client.scan_iter(match=f"{_glob(base)}*:circuit:*", count=1000):
            key = raw.decode(errors="replace")
            provider, sep, rest = key[len(base):].partition(":circuit:")
            host, _, name = rest.rpartition(":")  # a host may carry a port: split at the last colon
            if sep and host and name in ("open_until", "fails"):
                found[(provider, host)] = found.get((provider, host), False) or name == "open_until"
    finally:
        client.close()
    return found


def circuit_metrics(_now: datetime) -> list[Metric]:
    settings = get_settings()
    state = circuits(settings.broker_url or "", settings.broker_key_prefix)
    return [gauge("herald_circuit_open", "1 while the circuit of a provider host is open (its targets are "
                  "deferred) or waits for its probe; 0 once failures are counted and it is still closed.",
                  ["provider", "host"], [([p, h], float(is_open)) for (p, h), is_open in sorted(state.items())])]


# --- the database -------------------------------------------------------------------------------


# A count, not a list: far more than herald status shows, and a bound on what one scrape reads.
UNREACHED_LIMIT = 10_000


def unreached_pages(s: Session) -> int:
    """Pages that reached nobody and wait for a person: every delivery to someone paged failed, or they had no
    usable device, nobody answered, and the incident (if any) is still open (herald.unreached.open_pages)."""
    return len(unreached.open_pages(s, limit=UNREACHED_LIMIT))


def credential_metrics(s: Session, now: datetime) -> GaugeMetricFamily:
    rows = s.execute(select(Credential.name, Credential.environment, Credential.kind, Credential.owner,
                            Credential.expires_at)
                     .where(Credential.active.is_(True), Credential.expires_at.is_not(None))).all()
    return gauge("herald_credential_days_left", "Whole days until the credential expires (negative once "
                 "expired), as `herald credentials list` shows them.", ["credential", "environment", "kind", "owner"],
                 [([r.name, r.environment, r.kind, r.owner or ""], float(days_left(r.expires_at, now)))
                  for r in rows])


def webhook_metrics(s: Session) -> GaugeMetricFamily:
    counts = {(e, st): n for e, st, n in s.execute(
        select(WebhookMessage.endpoint_id, WebhookMessage.status, func.count())
        .group_by(WebhookMessage.endpoint_id, WebhookMessage.status))}
    endpoints = sorted({e for e, _ in counts})
    return gauge("herald_webhook_messages", "Write-back messages per endpoint and status: failed ones used up "
                 "their retries (herald webhooks replay), pending ones wait for their endpoint.",
                 ["endpoint", "status"],
                 [([e, st], float(counts.get((e, st), 0))) for e in endpoints for st in WEBHOOK_STATUSES])


def sweep_metrics(now: datetime) -> list[Metric]:
    runs = status.sweeps(now)
    last_ok = [([r["sweep"]], datetime.fromisoformat(r["last_ok_at"]).timestamp())
               for r in runs if r["last_ok_at"] is not None]
    return [
        gauge("herald_sweep_last_success_timestamp_seconds", "When the sweep last succeeded (Unix time); "
              "no series before its first success.", ["sweep"], last_ok),
        gauge("herald_sweep_period_seconds", "The sweep's period (its beat entry).", ["sweep"],
              [([r["sweep"]], r["period_s"]) for r in runs]),
        gauge("herald_sweep_overdue", "1 once twice the sweep's period (and a minute more) passed with no success "
              "since it last succeeded or beat started, as `herald status` says.", ["sweep"],
              [([r["sweep"]], float(r["overdue"])) for r in runs]),
    ]


def database_metrics(now: datetime) -> list[Metric]:
    with db.session() as s:
        open_letters = deadletters.open_counts(s)
        found: list[Metric] = [
            gauge("herald_dead_letters_open", "Dead letters not replayed or dismissed, by kind (task, message, "
                  "delivery): work that stopped and waits for a person (herald deadletters list).", ["kind"],
                  [([k], float(open_letters.get(k, 0))) for k in sorted({*DEAD_LETTER_KINDS, *open_letters})]),
            gauge("herald_unreached_pages", "Pages that reached nobody (every delivery failed, or no usable device), "
                  "unanswered, their incident (if any) still open: herald status lists them.",
                  values=[((), float(unreached_pages(s)))]),
            credential_metrics(s, now),
            webhook_metrics(s),
        ]
    return found + sweep_metrics(now)


# --- the collector ------------------------------------------------------------------------------


class ClusterCollector(Collector):
    """herald's state as gauges, read from the database and the broker at each scrape."""

    def __init__(self, now: Callable[[], datetime] = utcnow) -> None:
        self.now = now  # a test passes its own clock

    def sources(self) -> dict[str, Read]:
        found: dict[str, Read] = {"database": database_metrics, "broker": queue_metrics}
        if (get_settings().broker_url or "").startswith(REDIS_SCHEMES):
            found["circuits"] = circuit_metrics
        return found

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        up = GaugeMetricFamily("herald_metrics_source_up", "1 when the scrape could read this source (database, "
                               "broker, circuits), 0 when it failed (its series are missing).", labels=["source"])
        for source, read in self.sources().items():
            try:
                families = list(read(now))
            except Exception as exc:  # noqa: BLE001 - one source down must not hide the others
                log.warning("metrics: %s not read: %s: %s", source, type(exc).__name__, exc)
                up.add_metric([source], 0.0)
                continue
            up.add_metric([source], 1.0)
            yield from families
        yield up


def registry(*, cluster: bool = True) -> CollectorRegistry:
    """What this host's processes counted (herald.metrics), and with ``cluster`` the gauges read now."""
    return process_metrics.registry(*([ClusterCollector()] if cluster else []))


def exposition(*, cluster: bool = True) -> bytes:
    """One scrape, in Prometheus's text format (:data:`CONTENT_TYPE_LATEST`)."""
    return generate_latest(registry(cluster=cluster))
