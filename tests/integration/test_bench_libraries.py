"""The libraries scenario (bench/libraries.py) sends through each provider's library and through herald's sender.

Its figures are not checked (bench/ is not a timed test); what is: every side's messages reached the
fakes (counted from the fakes' own logs), and the report carries the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT

pytest.importorskip("psutil")
pytest.importorskip("aioapns")

N = 20


def test_every_library_and_herald_deliver_all_their_messages_to_the_fakes(tmp_path: Path) -> None:
    from bench import libraries, report
    from devtools.fakes.testing import running_fakes

    # given the fakes at the benchmark's 50 ms, in this process, so their logs can be read here
    with running_fakes(tmp_path / "fakes", latency_ms=50) as fakes:
        # when each library and herald's sender send N messages per channel, each from its own process
        record = libraries.run(fakes.env(), fakes.urls["control"], tmp_path, N, concurrency=10, latency_ms=50)
        logs: dict[str, list[dict[str, Any]]] = {
            channel: fakes.call(partial(list, fakes.providers[channel].seen)) for channel in libraries.CHANNELS}

    # then the fakes accepted every timed message of every side, one per device
    accepted_status = {"fcm": 200, "apns": 200, "webpush": 201}
    for channel, entries in logs.items():
        assert all(e["status"] == accepted_status[channel] for e in entries), channel
        assert all(libraries.sender_of(channel, e) is not None for e in entries), channel  # every entry readable
        for side in ("library", "herald"):
            devices = [e["token"] for e in entries if libraries.sender_of(channel, e) == (side, "timed")]
            assert len(devices) == len(set(devices)) == N, (channel, side, len(devices))
    # and the figures say so, per channel and side, in the record and in its markdown
    libraries_used = {"fcm": "firebase-admin", "webpush": "pywebpush", "apns": "aioapns"}
    for channel, library in libraries_used.items():
        for side, package in (("library", library), ("herald", "herald")):
            r = record["results"][channel][side]
            assert r["sender"].startswith(package + " ")
            assert r["accepted"] == r["n"] == r["client_ok"] == N
            assert r["per_s"] > 0 and r["cpu_s_per_1000"] > 0
    assert libraries.failed(record) == []
    text = report.markdown({"date": "today", "commit": "x", "mode": "quick", "cores": 2, "latency_ms": 50,
                            "wall_s": 1, "results": {}, "libraries": record})
    assert "| fcm | firebase-admin " in text and "| apns | aioapns " in text and "| webpush | herald " in text


def test_python_m_bench_runs_the_libraries_scenario_alone_and_reports_it() -> None:
    # given no database or broker for herald: the scenario alone needs only the fakes
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(PYTHONPATH=str(ROOT), BENCH_PG_ADMIN="postgresql://nobody@127.0.0.1:1/none")
    # when
    done = subprocess.run([sys.executable, "-m", "bench", "--scenarios", "libraries", "--n", str(N),
                           "--library-concurrency", "10", "--no-write"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    # then
    assert done.returncode == 0, done.stderr[-3000:]
    raw = done.stderr.strip().splitlines()[-1].removeprefix("raw figures: ")
    record = json.loads(Path(raw).read_text())["libraries"]
    assert record["n"] == N and record["concurrency"] == 10
    assert {(c, s): r["accepted"] for c, sides in record["results"].items() for s, r in sides.items()} == \
        {(c, s): N for c in ("fcm", "webpush", "apns") for s in ("library", "herald")}
    assert all(r["fakes_cpu_s_per_1000"] is not None for sides in record["results"].values() for r in sides.values())
    assert "| fcm | firebase-admin " in done.stdout and "| apns | herald " in done.stdout
