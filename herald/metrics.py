"""herald's own Prometheus metrics: what the delivery workers count, shared by every process of a host.

A Celery worker runs its tasks in forked pool processes (prefork), and ``herald metrics serve`` or
``herald api`` is yet another process, so a counter kept in one process's memory would never reach
the scrape. prometheus_client's multiprocess mode solves it: each process writes its values into
memory-mapped files of one directory (``PROMETHEUS_MULTIPROC_DIR``), and whoever serves the scrape
sums the files (:func:`registry`).
https://prometheus.github.io/client_python/multiprocess/

- The directory is ``HERALD_METRICS_DIR``, else an already set ``PROMETHEUS_MULTIPROC_DIR``, else
  ``<data_dir>/metrics``; :func:`enable` sets ``PROMETHEUS_MULTIPROC_DIR`` to it in a process before
  its first value, so the embedded default (one machine, prefork pools) works with no setting.
- Every process of one host that counts or serves must see the same directory; one directory per host
  (or one volume shared by containers: files are named by host name and pid, :func:`process_id`),
  emptied when the host's herald processes start (a tmpfs such as ``/run/herald/metrics``): counters
  of exited processes stay in their files on purpose, so totals do not drop when a pool process is
  replaced.
- A pool process that exits calls :func:`process_dead` (Celery's ``worker_process_shutdown``, connected
  in herald.app): it removes the files of live gauges (``multiprocess_mode="live*"``) of that process,
  which must not outlive it. The metrics defined here are counters and histograms, which are kept.

What is read from the database and the broker at scrape time (queues, circuits, dead letters,
credentials, sweeps, write-back) is not here: schedules.metrics collects it in the serving process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from herald import db
from herald.models import Delivery, EventRow, Outbox, utcnow
from herald.settings import get_settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.registry import Collector

    from herald.channels.types import Result

__all__ = ["DIRECTORY_ENV", "LATENCY_BUCKETS_S", "delivered", "directory", "enable", "observe", "process_dead",
           "process_id", "registry"]

log = logging.getLogger(__name__)

DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Publish to sent: a page is seconds on a healthy pipeline; minutes mean retries or a backlog.
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def directory() -> Path:
    """Where this host's processes keep their metric files."""
    settings = get_settings()
    if settings.metrics_dir is not None:
        return settings.metrics_dir.resolve()
    if os.environ.get(DIRECTORY_ENV):
        return Path(os.environ[DIRECTORY_ENV]).resolve()
    return (settings.data_dir / "metrics").resolve()


def process_id(pid: int | None = None) -> str:
    """A process's name in the metric files: its host's and its pid, so containers that share one directory
    (each numbering its processes from 1) never write the same file. No ``_``: prometheus_client splits
    file names on it."""
    return f"{socket.gethostname().replace('_', '-')}-{pid if pid is not None else os.getpid()}"


def enable() -> Path:
    """Turn multiprocess mode on in this process (before its first metric value) and return the directory."""
    path = directory()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ[DIRECTORY_ENV] = str(path)
    from prometheus_client import values

    # prometheus_client picks its value class when it is imported (a library may have imported it first):
    # herald's names its files by host and pid.
    if not getattr(values.ValueClass, "herald", False):
        values.ValueClass = values.MultiProcessValue(process_identifier=process_id)
        values.ValueClass.herald = True  # type: ignore[attr-defined]
    return path


@dataclass(frozen=True)
class _Metrics:
    deliveries: Counter
    latency: Histogram


_made: _Metrics | None = None
_lock = threading.Lock()


def _metrics() -> _Metrics:
    global _made
    with _lock:
        if _made is None:
            enable()
            from prometheus_client import Counter, Histogram

            # Not in prometheus_client's default registry: a scrape reads them from the files (registry()).
            _made = _Metrics(
                deliveries=Counter(
                    "herald_deliveries", "Send results, one per delivery target and try, by channel and outcome "
                    "(sent, transient, uncertain, permanent, invalid_token, auth, deferred).",
                    ["channel", "outcome"], registry=None),
                latency=Histogram(
                    "herald_publish_to_sent_seconds", "From an event's publish (its outbox row; else its "
                    "arrival at ingest) to a delivery target sent, by flow and severity.",
                    ["flow", "severity"], buckets=LATENCY_BUCKETS_S, registry=None))
        return _made


def delivered(channel: str, results: Iterable[Result]) -> None:
    """Count one batch's send results and time its sent targets (the delivery worker, after recording them).

    Never raises: a metric is not worth a delivery. The latency comes from the rows (one query per batch
    that sent something): the event's publish time and each target's ``sent_at``.
    """
    try:
        metrics = _metrics()
        outcomes: dict[str, int] = {}
        sent: list[int] = []
        for result in results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            if result.outcome == "sent":
                sent.append(result.delivery_id)
        # One write per outcome and per distinct latency, not per target: a multiprocess value is an mmap
        # write under a lock (about 40 µs a target when done one by one, against a batch of 500).
        for outcome, n in outcomes.items():
            metrics.deliveries.labels(channel, outcome).inc(n)
        for flow, severity, seconds, n in _latencies(sent) if sent else []:
            observe(metrics.latency.labels(flow, severity), seconds, n)
    except Exception as exc:  # noqa: BLE001 - counted or not, the batch is recorded; say why once per batch
        log.warning("delivery metrics not recorded: %s: %s", type(exc).__name__, exc)


def observe(histogram: Histogram, seconds: float, n: int) -> None:
    """``n`` observations of the same value in one write per series (prometheus_client observes one at a time)."""
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None:  # not the layout this was written against: one by one
        for _ in range(n):
            histogram.observe(seconds)
        return
    total.inc(seconds * n)
    for i, bound in enumerate(bounds):
        if seconds <= bound:
            buckets[i].inc(n)
            break


def _latencies(delivery_ids: list[int]) -> list[tuple[str, str, float, int]]:
    """(flow, severity, seconds, targets): a batch is one event, and its targets sent together share a sent_at."""
    with db.session() as s:
        found = s.execute(
            select(EventRow.flow, EventRow.severity, Outbox.created_at, EventRow.received_at, Delivery.sent_at,
                   func.count().label("n"))
            .join(Delivery, Delivery.event_id == EventRow.id)
            .outerjoin(Outbox, Outbox.id == EventRow.id)
            .where(Delivery.id.in_(delivery_ids), Delivery.status == "sent")
            .group_by(EventRow.flow, EventRow.severity, Outbox.created_at, EventRow.received_at,
                      Delivery.sent_at)).all()
    now = utcnow()
    return [(r.flow, r.severity, _seconds(r.created_at or r.received_at, r.sent_at or now), r.n) for r in found]


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


def process_dead(pid: int) -> None:
    """A pool process exits: drop its live gauges' files (counters and histograms stay summed)."""
    if not os.environ.get(DIRECTORY_ENV):
        return  # this process never counted anything
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(process_id(pid), os.environ[DIRECTORY_ENV])


def registry(*collectors: Collector) -> CollectorRegistry:
    """A registry that sums every process's files in :func:`directory`, plus any collector given."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    path = directory()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    reg = CollectorRegistry(auto_describe=False)  # describing would read the database at register time
    MultiProcessCollector(reg, path=str(path))
    for collector in collectors:
        reg.register(collector)
    return reg
