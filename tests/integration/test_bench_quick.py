"""The benchmark harness runs end to end on a tiny load (its figures are not checked: bench/ is not a timed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from tests.integration.conftest import PG_ADMIN, REDIS_URL, ROOT

pytest.importorskip("psutil")
pytest.importorskip("httpx")


def test_bench_quick_path_measures_herald_the_ceiling_and_the_naive_baseline() -> None:
    db_name = f"herald_bench_t{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(BENCH_DB=db_name, BENCH_REDIS=REDIS_URL, PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--scenarios", "fcm,mixed", "--n", "120",
                               "--naive-n", "12", "--no-write"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        raw = done.stderr.strip().splitlines()[-1].removeprefix("raw figures: ")
        record = json.loads(Path(raw).read_text())
        for name in ("fcm", "mixed"):
            r = record["results"][name]
            assert r["herald"]["statuses"] == {"sent": 120} and r["herald"]["attempts"] == 120
            assert r["ceiling"]["n"] == 120 and r["naive"]["n"] == 12
            assert r["herald"]["per_s"] > 0 and r["herald"]["cpu_s_per_1000"] > 0
        assert "| mixed | herald |" in done.stdout
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"{db_name}*", count=1000):
            r.delete(key)
