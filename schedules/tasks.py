"""The periodic tasks celery beat sends (see schedules.beat for their periods)."""

from __future__ import annotations

from herald.app import app
from herald.tasks import HeraldTask
from schedules.outbox import relay
from schedules.recover import recover_stalled


@app.task(base=HeraldTask, name="herald.sweep.recover")
def sweep_recover() -> dict[str, int]:
    return recover_stalled()


@app.task(base=HeraldTask, name="herald.sweep.outbox")
def sweep_outbox() -> int:
    return relay()
