"""What the benchmark runs on: its own Postgres database and Redis prefix, the fakes, the workers."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.procs import Group

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
DB_NAME = os.environ.get("BENCH_DB", "herald_bench")
PREFIX = f"{DB_NAME}:"  # Redis keys of herald's broker and gate
NAIVE_PREFIX = f"{DB_NAME}_naive:"  # and of the naive baseline's Celery app
ROOT = Path(__file__).resolve().parent.parent


def fresh_services(data_dir: Path) -> dict[str, str]:
    """Drop and create the database, clear the Redis prefixes; returns herald's environment."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    r = redis.Redis.from_url(REDIS_URL)
    for prefix in (PREFIX, NAIVE_PREFIX):
        for key in r.scan_iter(f"{prefix}*", count=1000):
            r.delete(key)
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"HERALD_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}",
            "HERALD_BROKER_URL": REDIS_URL, "HERALD_BROKER_KEY_PREFIX": PREFIX,
            "HERALD_DATA_DIR": str(data_dir), "HERALD_LOG_LEVEL": "WARNING", "BENCH_NAIVE_PREFIX": NAIVE_PREFIX}


def start_fakes(group: Group, folder: Path, latency_ms: float) -> tuple[dict[str, str], str]:
    """The fakes in their own process (their CPU is reported apart); returns (environment, control URL)."""
    env_file = folder / "fakes.env"
    env_file.unlink(missing_ok=True)
    group.start("fakes", [sys.executable, "-m", "cli", "fakes", "serve", "--dir", str(folder), "--port", "0",
                          "--latency-ms", str(latency_ms)], os.environ.copy(), folder.parent / "fakes.log")
    deadline = time.monotonic() + 60
    while not env_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the fakes did not start (see fakes.log)")
        time.sleep(0.1)
    time.sleep(0.2)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return env, env.pop("HERALD_FAKES_CONTROL_URL")


def control(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def start_herald(group: Group, env: dict[str, str], logs: Path, deliver_concurrency: int,
                 deliver_kind: str = "prefork") -> None:
    """herald's pools as in production, each its own worker: the pipeline, one per channel, retry."""
    herald = [sys.executable, "-m", "cli", "worker", "--loglevel", "WARNING"]
    group.start("pipeline", [*herald, "--pool", "ingest,enrich,resolve", "-c", "1", "--kind", "prefork"], env,
                logs / "pipeline.log")
    for channel in ("fcm", "apns", "webpush"):
        group.start(f"deliver.{channel}", [*herald, "--pool", f"deliver.{channel}", "-c", str(deliver_concurrency),
                                           "--kind", deliver_kind],
                    env, logs / f"deliver.{channel}.log")
    group.start("retry", [*herald, "--pool", "retry", "-c", "1", "--kind", "prefork"], env, logs / "retry.log")
    # the urgent lane: pages through every stage (herald/lanes.py); idle unless a scenario pages
    group.start("urgent", [*herald, "--pool", "urgent", "--kind", "prefork"], env, logs / "urgent.log")  # its default


def start_naive(group: Group, env: dict[str, str], logs: Path) -> None:
    """A plain Celery worker with its defaults (prefork, one process per core)."""
    group.start("naive", [sys.executable, "-m", "celery", "-A", "bench.naive", "worker", "-Q", "bench.naive",
                          "--loglevel", "WARNING", "-n", f"naive-{os.getpid()}@%h"],
                {**env, "PYTHONPATH": str(ROOT)}, logs / "naive.log")
