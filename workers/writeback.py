"""The writeback pool's task: deliver the write-back webhooks that are due (herald/writeback.py).

Sent after commit by :func:`herald.writeback.record` (a hint; no arguments: the rows are the work), and
the ``writeback`` sweep (schedules/periodic.py) runs the same delivery every few seconds. Safe to run
twice and side by side: messages are claimed with SKIP LOCKED and each outcome is fenced.
"""

from __future__ import annotations

from herald import writeback
from herald.app import app
from herald.taskbase import HeraldTask


@app.task(base=HeraldTask, name=writeback.DELIVER_TASK)
def deliver() -> dict[str, int]:
    return writeback.deliver_due()
