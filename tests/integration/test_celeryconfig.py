"""Loading the Celery configuration: publishing loads no schedule; beat, and only beat, reads the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from celery.utils.imports import symbol_by_name
from sqlalchemy import select

from herald.models import SweepRun
from tests.integration.conftest import ROOT
from tests.integration.helpers import rows

PUBLISH_AND_LIST_MODULES = """
import json, sys
from producers import flow_failed, publish
publish(flow_failed("orders-to-erp", environment="prod"))
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("schedules", "cli", "devtools"))))
"""


def test_publishing_imports_no_schedule(clean: None) -> None:
    # given a fresh interpreter that imports producers and publishes one event
    done = subprocess.run([sys.executable, "-c", PUBLISH_AND_LIST_MODULES], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # then neither the schedules package nor a shell was loaded on the way
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_beat_scheduler_carries_the_whole_table_and_records_beat_start(clean: None) -> None:
    from herald.app import app
    from schedules.beat import BEAT_ROW, schedule

    # given the scheduler celeryconfig names (the one `herald beat` and `celery -A herald.app beat` run)
    scheduler_cls = symbol_by_name(app.conf.beat_scheduler)
    with tempfile.TemporaryDirectory() as folder:
        # when beat sets it up
        scheduler = scheduler_cls(app=app, schedule_filename=str(Path(folder) / "celerybeat-schedule"))
        try:
            entries = {name: (e.task, e.schedule.run_every.total_seconds(), e.options.get("expires"))
                       for name, e in scheduler.schedule.items() if e.task.startswith("herald.")}
        finally:
            scheduler.close()
    # then every entry of the table (next to Celery's own defaults) is scheduled with its period and expiry,
    # and beat's start is recorded
    assert entries == {name: (e["task"], e["schedule"], e["options"]["expires"]) for name, e in schedule().items()}
    assert [r.sweep for r in rows(select(SweepRun.sweep).where(SweepRun.sweep == BEAT_ROW))] == [BEAT_ROW]
