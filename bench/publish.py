"""``python -m bench.publish``: what each publish mode costs the producer, on Postgres and Redis (or RabbitMQ).

    python -m bench.publish                 # 2,000 events per mode, one process, Redis on 127.0.0.1:6379
    python -m bench.publish -n 1000 --broker amqp://guest:guest@127.0.0.1:5672/herald_bench   # a vhost of its own

Modes: ``broker only`` (direct mode without the database: HERALD_PUBLISH_DIRECT_RECORD=false), ``direct +
outbox row`` (direct mode with the database, the default), ``publish_many x100`` (the same, 100 events per
call), ``outbox, 1 per tx`` (``publish(event, session=s)``, one caller transaction per event). Nothing consumes
the queue; the database ``herald_bench_publish`` is dropped and created, the Redis keys under its prefix deleted.
Latency is per call (per batch for publish_many, shown per event).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import psycopg

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = "herald_bench_publish"
PREFIX = f"{DB_NAME}:"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def setup(broker: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    os.environ.update({
        "HERALD_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}",
        "HERALD_BROKER_URL": broker, "HERALD_BROKER_KEY_PREFIX": PREFIX,
        "HERALD_DATA_DIR": tempfile.mkdtemp(prefix="herald-bench-publish-"),
    })
    from herald import migrate

    migrate.upgrade()


def clear(broker: str) -> None:
    from sqlalchemy import text

    from herald import db

    with db.session() as s:
        s.execute(text("TRUNCATE outbox"))
    if broker.startswith("redis"):
        import redis

        r = redis.Redis.from_url(broker)
        for key in r.scan_iter(f"{PREFIX}*"):
            if b"_kombu.binding." not in key:
                r.delete(key)
    else:
        from herald.app import app

        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("ingest")


def run(mode: str, n: int) -> dict[str, Any]:
    from herald import db
    from herald.publishing import publish_many
    from herald.settings import get_settings
    from producers import artifact_deployed, publish

    os.environ["HERALD_PUBLISH_DIRECT_RECORD"] = "false" if mode == "broker only" else "true"
    get_settings.cache_clear()
    events = [artifact_deployed(f"api-{i}", kind="api", environment="dev") for i in range(n)]
    latencies: list[float] = []
    cpu0, start = time.process_time(), time.perf_counter()
    if mode == "publish_many x100":
        for i in range(0, n, 100):
            t = time.perf_counter()
            publish_many(events[i:i + 100])
            latencies += [(time.perf_counter() - t) / 100] * 100
    else:
        for event in events:
            t = time.perf_counter()
            if mode == "outbox, 1 per tx":
                with db.session() as s:
                    publish(event, session=s)
            else:
                publish(event)
            latencies.append(time.perf_counter() - t)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"mode": mode, "n": n, "per_s": round(n / seconds), "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2), "cpu_ms_per_event": round(cpu / n * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--broker", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    setup(args.broker)
    results = []
    # warm up the connections and the broker's declarations, then each mode on an empty queue and table
    run("direct + outbox row", 50)
    for mode in ("broker only", "direct + outbox row", "publish_many x100", "outbox, 1 per tx"):
        clear(args.broker)
        results.append(run(mode, args.n))
        print(json.dumps(results[-1]), flush=True)
    clear(args.broker)
    print("| mode | publishes/s | p50 ms | p99 ms | producer CPU ms/event |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['per_s']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_ms_per_event']} |")


if __name__ == "__main__":
    main()
