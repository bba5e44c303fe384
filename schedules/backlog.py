"""The backlog and SLA scan: queue depth and age on the broker, time to delivery per flow in Postgres.

Each measure feeds a condition with hysteresis (schedules.conditions):

- ``queue_backlog`` per queue: waiting plus unacknowledged messages >= HERALD_BACKLOG_DEPTH_THRESHOLD;
- ``processing_delayed`` per queue: oldest waiting message older than HERALD_BACKLOG_AGE_THRESHOLD_S;
- ``sla_breached`` per flow: at least one event pending longer than its SLA (schedules.sla);
- ``dead_letters``: at least one dead letter not replayed (schedules.conditions).

Throughput (events received, deliveries sent, and per queue: events stored by ingest and attempts
per deliver.<channel>, per minute over the last scan window) goes
into the run summary that ``herald status`` shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from herald.lanes import QUEUES
from herald.models import Delivery, DeliveryAttempt, EventRow, utcnow
from herald.settings import get_settings
from schedules import sla
from schedules.conditions import observe, observe_dead_letters
from schedules.queues import queue_stats
from schedules.runs import Summary, run_exclusive

SWEEP = "backlog"
SOURCE = "herald/sweep.backlog"


def scan_queues(s: Session, now: datetime, queues: list[str], broker_url: str | None = None) -> dict[str, Any]:
    settings = get_settings()
    # The broker's clock and ours are the same machine's or NTP-close; ages use Unix time like the stamps.
    stats = queue_stats(queues, broker_url=broker_url, now=now.timestamp())
    out: dict[str, Any] = {}
    for q in stats:
        observe(s, "queue_backlog", q.queue, q.depth, settings.backlog_depth_threshold, now=now,
                metric="depth", source=SOURCE)
        observe(s, "processing_delayed", q.queue, q.oldest_age_s, settings.backlog_age_threshold_s, now=now,
                metric="oldest_message_age_s", source=SOURCE)
        out[q.queue] = {"waiting": q.waiting, "unacked": q.unacked,
                        "oldest_age_s": round(q.oldest_age_s, 3) if q.oldest_age_s is not None else None}
    return out


def scan_flows(s: Session, now: datetime) -> dict[str, Any]:
    settings = get_settings()
    out: dict[str, Any] = {}
    for flow in sla.FLOWS:
        pending = sla.pending_past_sla(s, flow, now)
        observe(s, "sla_breached", flow, pending, 1, now=now, metric="events_pending_past_sla", source=SOURCE)
        window_s = max(settings.backlog_interval_s, 60.0)
        out[flow] = {"pending_past_sla": pending, "sla_s": sla.sla_s(flow),
                     **sla.time_to_first_delivery(s, flow, now, window_s)}
    return out


def throughput(s: Session, now: datetime, window_s: float) -> dict[str, Any]:
    """Recent work done, per minute: overall, and per queue where Postgres records it.

    ``ingest`` counts events stored, ``deliver.<channel>`` the attempts made on that channel (each
    attempt is one target of a batch task, retries included).
    """
    since = now - timedelta(seconds=window_s)
    events = s.scalar(select(func.count()).select_from(EventRow).where(EventRow.received_at >= since)) or 0
    sent = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.sent_at >= since)) or 0
    attempts = s.execute(select(Delivery.channel, func.count()).join(DeliveryAttempt)
                         .where(DeliveryAttempt.at >= since).group_by(Delivery.channel)).all()
    per_min = 60.0 / window_s
    per_queue = {"ingest": round(events * per_min, 2),
                 **{f"deliver.{channel}": round(n * per_min, 2) for channel, n in attempts}}
    return {"events_per_min": round(events * per_min, 2), "deliveries_per_min": round(sent * per_min, 2),
            "per_queue_per_min": per_queue}


def _scan(s: Session, now: datetime, queues: list[str], broker_url: str | None) -> Summary:
    window_s = max(get_settings().backlog_interval_s, 60.0)
    return {"queues": scan_queues(s, now, queues, broker_url), "flows": scan_flows(s, now),
            "throughput": throughput(s, now, window_s),
            "open_dead_letters": observe_dead_letters(s, now=now, source=SOURCE)}


def scan_backlog(now: datetime | None = None, *, queues: list[str] | None = None, broker_url: str | None = None,
                 min_gap_s: float = 0.0) -> Summary | None:
    """Run the scan once (None when another copy holds the lock).

    ``now`` (default: the present) is the time every measure is taken at, the age of the queued messages
    included, so a test can move it forward instead of sleeping.
    """
    return run_exclusive(SWEEP, lambda s: _scan(s, now or utcnow(), list(queues or QUEUES), broker_url),
                         min_gap_s=min_gap_s)
