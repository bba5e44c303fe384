"""The embedded default: no services at all, SQLite for state and as the broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.integration.conftest import ROOT, SAMPLE_DIRECTORY, Workers, track_log, wait_until


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return {**env, "HERALD_DATA_DIR": str(data_dir), "HERALD_RETRY_BASE_S": "0.5"}


def herald(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


BURST = """
from producers import publish, artifact_deployed, business_event, flow_failed
ids = []
for i in range(10):
    ids.append(publish(artifact_deployed(f"api-{i}", kind="api", environment="test")))
    ids.append(publish(business_event("order_submitted", topic="orders.eu", reference=f"PO-{i}", environment="prod")))
ids.append(publish(flow_failed("orders-to-erp", environment="prod")))
print(len(ids))
"""


def test_two_worker_processes_on_sqlite_deliver_a_burst(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    assert herald(env, "migrate").returncode == 0
    assert herald(env, "directory", "apply", str(SAMPLE_DIRECTORY)).returncode == 0
    workers = Workers()
    try:
        # given two separate worker processes sharing nothing but the data directory
        for pools in ("ingest,enrich,resolve,urgent", "deliver.fcm,deliver.apns,deliver.webpush,retry"):
            argv = [sys.executable, "-m", "cli", "worker", "--pool", pools, "--concurrency", "2"]
            log = open(track_log(tmp_path / f"{pools[:6]}.log"), "ab")  # noqa: SIM115
            workers.procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
        # when a producer publishes a burst
        done = subprocess.run([sys.executable, "-c", BURST], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "21"
        engine = create_engine(f"sqlite:///{tmp_path / 'herald.sqlite'}")

        def settled() -> bool:
            with engine.connect() as c:
                events = c.execute(text("SELECT count(*) FROM events WHERE status IN ('resolved', 'grouped')")).scalar()
                open_targets = c.execute(text("SELECT count(*) FROM deliveries WHERE status NOT IN "
                                              "('sent', 'failed', 'dead')")).scalar()
            return events == 21 and open_targets == 0

        # then every target ends terminal, delivered by the second process
        wait_until(settled, timeout_s=180, interval_s=1, message="burst delivered on SQLite")
        with engine.connect() as c:
            by_status = c.execute(text("SELECT status, count(*) FROM deliveries GROUP BY status")).all()
        statuses: dict[str, int] = dict(by_status)
        assert statuses["sent"] >= 60 and set(statuses) <= {"sent", "failed"}
        assert all(p.poll() is None for p in workers.procs)
    finally:
        workers.stop_all()


def test_demo_json_reports_all_seven_flows_with_nothing_pending(tmp_path: Path) -> None:
    started = time.monotonic()
    done = herald(embedded_env(tmp_path), "demo", "--json", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert set(result) == {"flows", "pending", "failed", "deliberate_faults", "written_back", "webhooks"}
    assert result["pending"] == 0
    assert result["webhooks"]["missing"] == []  # the answers' signed write-back was verified by the receiver
    # every failure is one the fakes were told to make, and the answers were written back
    assert result["failed"]["unexpected"] == 0 and result["failed"]["deliberate"] >= 1
    assert [i["status"] for i in result["written_back"]["incidents"]] == ["resolved", "acknowledged"]
    assert result["written_back"]["approval"]["status"] == "approved"
    assert set(result["flows"]) == {"artifact", "failure", "approval", "business", "credential", "operations",
                                    "response"}
    for flow, row in result["flows"].items():
        assert row["events"] > 0 and row["notifications"] > 0, flow
        assert row["deliveries"].get("sent", 0) > 0, flow
    assert result["flows"]["artifact"]["deliveries"]["failed"] >= 1  # the dead token in the sample
    # the local fakes received every attempt (tests/integration/test_demo_fakes.py looks at what they received)
    seen = json.loads((tmp_path / "demo-fakes.json").read_text())
    requests = sum(len(entries) for entries in seen.values())
    assert requests >= sum(sum(r["deliveries"].values()) for r in result["flows"].values())
    assert not (tmp_path / "dev-channel.jsonl").exists()
    assert time.monotonic() - started < 300
