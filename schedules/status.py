"""What ``herald status`` shows: when each sweep last ran, whether it is overdue, what is raised, dead letters.

A sweep is overdue once twice its period (and at least a minute more) passed since its last success,
or, when beat started after that (or it never succeeded), since beat started: beat runs a sweep one
period after it starts, so right after a start the hourly sweeps have not run and are not yet due.
Beat's start is recorded by schedules.beat (its scheduler) as the ``beat`` row of ``sweep_runs``.

Each worker pool (herald.lanes.POOLS) is ``up`` while a worker consuming its queues has a heartbeat
younger than ``HERALD_HEARTBEAT_TIMEOUT_S`` (herald.heartbeats), ``down`` once every worker it had
stopped or went silent (killed, crashed, hung), and ``not seen`` when no worker ever ran it against this
database (a deployment may leave a pool out, e.g. a channel it does not use; `herald worker --pool all`
covers every pool).

:func:`report` gathers all of it, with the queues (depth and oldest age, live from the broker), the
providers' circuits (herald/channels/gate.py, shared in Redis), open dead letters and their targets,
the pages that reached nobody, the credentials expiring soonest and every one that has expired while still
in use; :func:`needs_a_person` says, in words, what in it a person must act on (``herald status`` exits 1
when anything does).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, select

from herald import db, deadletters
from herald.lanes import POOLS, QUEUES
from herald.models import Credential, DeadLetter, OpsCondition, SweepRun, WorkerHeartbeat, utcnow
from herald.settings import get_settings
from schedules.beat import BEAT_ROW, entries


def overdue_after_s(period_s: float) -> float:
    """A sweep is overdue once twice its period (and at least a minute more) passed without success."""
    return max(2 * period_s, period_s + 60.0)


def stack_started_at(now: datetime | None = None) -> datetime | None:
    """When the running stack started, as its workers say: the start of the oldest worker still alive."""
    live_after = (now or utcnow()) - timedelta(seconds=get_settings().heartbeat_timeout_s)
    with db.session() as s:
        return s.scalar(select(func.min(WorkerHeartbeat.started_at))
                        .where(WorkerHeartbeat.stopped_at.is_(None), WorkerHeartbeat.last_seen >= live_after))


def sweeps(now: datetime | None = None) -> list[dict[str, Any]]:
    """Each sweep of beat's table: last success and outcome, and whether it is overdue or not yet due.

    The clock of a sweep starts at its last success or beat's recorded start, whichever is later. With no
    start recorded (beat could not write it: it started before the database was migrated, say) it starts
    when the oldest live worker started: a sweep is not overdue before its first period has passed since
    the stack started. With neither, a sweep that never ran is overdue: nothing runs it.
    """
    now = now or utcnow()
    with db.session() as s:
        runs = {r.sweep: r for r in s.scalars(select(SweepRun))}
    beat = runs.get(BEAT_ROW)
    started = beat.last_started_at if beat else None
    if started is None:
        started = stack_started_at(now)
    out = []
    for entry in entries():
        run = runs.get(entry.sweep)
        last_ok = run.last_ok_at if run else None
        since = max((t for t in (last_ok, started) if t is not None), default=None)
        late = since is None or now - since > timedelta(seconds=overdue_after_s(entry.period_s))
        out.append({"sweep": entry.sweep, "task": entry.task, "period_s": entry.period_s,
                    "last_ok_at": last_ok.isoformat() if last_ok else None,
                    "last_outcome": run.last_outcome if run else None,
                    "last_error": run.last_error if run else None,
                    "runs": run.runs if run else 0, "failures": run.failures if run else 0,
                    "overdue": late, "not_yet_due": last_ok is None and not late,
                    "last_summary": run.last_summary if run else {}})
    return out


def beat_started_at() -> str | None:
    with db.session() as s:
        started = s.scalar(select(SweepRun.last_started_at).where(SweepRun.sweep == BEAT_ROW))
    return started.isoformat() if started else None


def open_dead_letters() -> dict[str, int]:
    """Dead letters not replayed, by kind (task, message, delivery)."""
    with db.session() as s:
        return deadletters.open_counts(s)


def dead_lettered_targets() -> int:
    """Delivery targets that wait in open dead letters (one dead letter holds every dead target of a batch)."""
    with db.session() as s:
        refs = s.scalars(select(DeadLetter).where(DeadLetter.replayed_at.is_(None), DeadLetter.kind == "delivery"))
        return sum(len(deadletters.original_ref(r).get("delivery_ids") or []) for r in refs)


def raised_conditions() -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.scalars(select(OpsCondition).where(OpsCondition.raised.is_(True))
                         .order_by(OpsCondition.condition, OpsCondition.resource))
        return [{"condition": r.condition, "resource": r.resource, "value": r.value, "threshold": r.threshold,
                 "raised_at": r.raised_at.isoformat() if r.raised_at else None} for r in rows]


def pools(now: datetime | None = None) -> list[dict[str, Any]]:
    """Every pool with its live workers: ``up``, ``down`` (had workers, none live now) or ``not seen``."""
    now = now or utcnow()
    live_after = now - timedelta(seconds=get_settings().heartbeat_timeout_s)
    with db.session() as s:
        beats = list(s.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.node)))
    out = []
    for name, pool in POOLS.items():
        mine = [b for b in beats if set(pool.queues) <= set(b.queues)]
        live = [b for b in mine if b.stopped_at is None and b.last_seen >= live_after]
        last = max(mine, key=lambda b: b.last_seen, default=None)
        state = "up" if live else "down" if mine else "not seen"
        out.append({"pool": name, "queues": list(pool.queues), "state": state,
                    "workers": [{"node": b.node, "pid": b.pid, "hostname": b.hostname,
                                 "started_at": b.started_at.isoformat(), "last_seen": b.last_seen.isoformat()}
                                for b in live],
                    "last_seen": last.last_seen.isoformat() if last else None,
                    # why a down pool is down: its last worker stopped (warm shutdown) or went silent
                    "last_worker": None if last is None or live else "stopped" if last.stopped_at else "silent"})
    return out


def queues(now: datetime | None = None) -> dict[str, Any]:
    """Depth and oldest age of every queue, read from the broker now; ``over_sla`` once the oldest message is
    older than HERALD_BACKLOG_AGE_THRESHOLD_S. ``error`` says why the broker could not be read."""
    from schedules.queues import queue_stats

    threshold = get_settings().backlog_age_threshold_s
    at = (now or utcnow()).timestamp()
    try:
        stats = queue_stats(list(QUEUES), now=at)
    except Exception as exc:  # noqa: BLE001 - a broker down is one line of the report, not a crash
        return {"age_threshold_s": threshold, "rows": [], "error": f"{type(exc).__name__}: {exc}"[:300]}
    rows = [{"queue": q.queue, "waiting": q.waiting, "unacked": q.unacked, "depth": q.depth,
             "oldest_age_s": round(q.oldest_age_s, 1) if q.oldest_age_s is not None else None,
             "over_sla": q.oldest_age_s is not None and q.oldest_age_s > threshold} for q in stats]
    return {"age_threshold_s": threshold, "rows": rows, "error": None}


def circuits() -> dict[str, Any]:
    """The providers' circuits that are not closed (herald/channels/gate.py keeps them in Redis).

    ``open``: no request goes to that host for ``open_for_s`` more seconds; ``half-open``: its open period
    ended and the next send probes it (a host nobody has sent to since stays so; not a fault by itself).
    ``shared`` is false when the broker is not Redis: each process then keeps its own, which no other
    process can read.
    """
    settings = get_settings()
    url = settings.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return {"shared": False, "rows": [], "error": None}
    import redis

    base = f"{settings.broker_key_prefix}herald:gate:"
    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{base}*:circuit:*:open_until", count=1000))
        values = cast(list[bytes | None], client.mget(keys)) if keys else []
        seconds, micros = cast(tuple[int, int], client.time())
    except Exception as exc:  # noqa: BLE001 - as for the queues
        return {"shared": True, "rows": [], "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        client.close()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    rows = []
    for key, value in zip(keys, values, strict=True):
        provider, _, rest = key[len(base):].partition(":circuit:")
        open_ms = int(value or 0) - now_ms
        rows.append({"provider": provider, "host": rest[:-len(":open_until")],
                     "state": "open" if open_ms > 0 else "half-open",
                     "open_for_s": round(open_ms / 1000, 1) if open_ms > 0 else 0.0})
    return {"shared": True, "rows": rows, "error": None}


def unreached_pages(limit: int = 20) -> list[dict[str, Any]]:
    """Hook for the paging work: the pages that reached nobody and that nobody has answered yet, newest first.

    Empty while herald.unreached (its ``open_pages``) or its table does not exist in this database.
    """
    try:
        from herald import unreached
    except ImportError:
        return []
    open_pages = getattr(unreached, "open_pages", None)
    with db.session() as s:
        if open_pages is None or not _has_table(s, "incident_pages"):
            return []
        pages = open_pages(s, limit=limit)
    return [_plain(dataclasses.asdict(p) if dataclasses.is_dataclass(p) and not isinstance(p, type) else dict(p))
            for p in pages]


def _has_table(s: Any, name: str) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(s.connection()).has_table(name))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
            for k, v in row.items()}


def credentials_expiring(now: datetime | None = None, limit: int = 5) -> list[dict[str, Any]]:
    """The active credentials that expire soonest (expired ones first), with the days left."""
    now = now or utcnow()
    with db.session() as s:
        rows = s.scalars(select(Credential).where(Credential.active.is_(True), Credential.expires_at.is_not(None))
                         .order_by(Credential.expires_at, Credential.name).limit(limit))
        return [{"name": c.name, "environment": c.environment, "kind": c.kind, "owner": c.owner,
                 "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                 "days_left": round((c.expires_at - now).total_seconds() / 86400, 1) if c.expires_at else None}
                for c in rows]


def credentials_expired(now: datetime | None = None) -> list[dict[str, Any]]:
    """Every active credential whose expiry has passed: something that uses it fails until a person renews it
    (``herald credentials add``, a new file) or retires it (``herald credentials retire``)."""
    now = now or utcnow()
    with db.session() as s:
        found = s.execute(select(Credential.name, Credential.environment, Credential.origin, Credential.expires_at)
                          .where(Credential.active.is_(True), Credential.expires_at <= now)
                          .order_by(Credential.expires_at, Credential.name, Credential.environment))
        return [{"name": name, "environment": environment, "origin": origin, "expires_at": expires_at.isoformat()}
                for name, environment, origin, expires_at in found if expires_at is not None]


def report(now: datetime | None = None) -> dict[str, Any]:
    """Everything ``herald status`` shows, as ``--json`` prints it; ``attention`` lists what needs a person."""
    now = now or utcnow()
    started = time.perf_counter()
    dead = open_dead_letters()
    body: dict[str, Any] = {
        "sweeps": sweeps(now), "beat_started_at": beat_started_at(),
        "stack_started_at": (lambda t: t.isoformat() if t else None)(stack_started_at(now)),
        "pools": pools(now), "queues": queues(now), "circuits": circuits(), "raised": raised_conditions(),
        "dead_letters": {"open": sum(dead.values()), "by_kind": dead,
                         "targets": dead_lettered_targets() if dead.get("delivery") else 0},
        "unreached_pages": unreached_pages(), "credentials": credentials_expiring(now),
        "credentials_expired": credentials_expired(now),
    }
    body["attention"] = needs_a_person(body)
    body["took_ms"] = round((time.perf_counter() - started) * 1000)
    return body


def needs_a_person(body: dict[str, Any]) -> list[str]:
    """What in a :func:`report` a person must act on, one short phrase each; empty when all is well."""
    found: list[str] = []
    dead = body["dead_letters"]
    if dead["open"]:
        targets = f", {dead['targets']} target(s) dead-lettered" if dead["targets"] else ""
        found.append(f"{dead['open']} open dead letter(s){targets}: herald deadletters list")
    for row in body["sweeps"]:
        if row["overdue"]:
            found.append(f"sweep {row['sweep']} overdue")
        elif row["last_outcome"] == "failed":
            found.append(f"sweep {row['sweep']} failed its last run")
    found += [f"pool {p['pool']} down" for p in body["pools"] if p["state"] == "down"]
    queues_ = body["queues"]
    if queues_["error"]:
        found.append(f"broker unreadable: {queues_['error']}")
    found += [f"queue {q['queue']}: oldest message {q['oldest_age_s']:g}s old (over {queues_['age_threshold_s']:g}s)"
              for q in queues_["rows"] if q["over_sla"]]
    found += [f"circuit open: {c['provider']} {c['host']}" for c in body["circuits"]["rows"] if c["state"] == "open"]
    if body["unreached_pages"]:
        found.append(f"{len(body['unreached_pages'])} page(s) reached nobody")
    found += [f"condition {c['condition']} raised on {c['resource']}" for c in body["raised"]]
    expired = body["credentials_expired"]
    if len(expired) > EXPIRED_NAMED:
        found.append(f"{len(expired)} credentials expired: renew or retire them (herald credentials list)")
    else:
        found += [f"credential {c['name']} ({c['environment']}) expired {c['expires_at'][:10]}: renew it "
                  f"({RENEW.get(c['origin'], RENEW['declared'])})" + (" or retire it (herald credentials retire)"
                                               if c["origin"] == "declared" else "") for c in expired]
    return found


EXPIRED_NAMED = 3  # expired credentials named one per line; past that, counted
RENEW = {"declared": "herald credentials add", "file": "replace its file", "directory": "in the directory file"}
