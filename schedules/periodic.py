"""The periodic tasks celery beat sends (see schedules.beat for their periods).

Each is small and safe to run twice: the sweep it calls takes its own lock, and a beat-sent run
skips when the same sweep already ran within half its period (``min_gap_s``).
"""

from __future__ import annotations

from typing import Any

from herald import writeback
from herald.app import app
from herald.outbox import relay
from herald.settings import get_settings
from herald.taskbase import HeraldTask
from schedules.approvals import sweep_approvals
from schedules.backlog import scan_backlog
from schedules.due import tick_recorded
from schedules.escalations import sweep_escalations
from schedules.expiry import sweep_credentials
from schedules.purge import purge
from schedules.recover import recover_stalled
from schedules.runs import run_exclusive, run_recorded


@app.task(base=HeraldTask, name="herald.sweep.recover")
def sweep_recover() -> dict[str, Any] | None:
    # recover_stalled() opens its own sessions; the lock session only makes the run exclusive and recorded
    return run_exclusive("recover", lambda _s: dict(recover_stalled()),
                         min_gap_s=get_settings().recover_interval_s / 2)


@app.task(base=HeraldTask, name="herald.sweep.outbox")
def sweep_outbox() -> dict[str, Any] | None:
    return run_exclusive("outbox", lambda _s: {"relayed": relay()},
                         min_gap_s=get_settings().outbox_relay_interval_s / 2)


@app.task(base=HeraldTask, name="herald.sweep.credentials")
def sweep_credentials_task() -> dict[str, Any] | None:
    return sweep_credentials(min_gap_s=get_settings().credential_sweep_interval_s / 2)


@app.task(base=HeraldTask, name="herald.sweep.backlog")
def scan_backlog_task() -> dict[str, Any] | None:
    return scan_backlog(min_gap_s=get_settings().backlog_interval_s / 2)


@app.task(base=HeraldTask, name="herald.sweep.due")
def tick_due_work() -> dict[str, Any]:
    return tick_recorded()


@app.task(base=HeraldTask, name="herald.sweep.escalations")
def sweep_escalations_task() -> dict[str, Any] | None:
    return sweep_escalations(min_gap_s=get_settings().escalation_audit_interval_s / 2)


@app.task(base=HeraldTask, name="herald.sweep.approvals")
def sweep_approvals_task() -> dict[str, Any] | None:
    # as often as timed work: an approval closes within seconds of its expiry
    return sweep_approvals(min_gap_s=get_settings().due_tick_interval_s / 2)


@app.task(base=HeraldTask, name="herald.sweep.purge")
def purge_retention() -> dict[str, Any] | None:
    return purge(min_gap_s=get_settings().purge_interval_s / 2)


@app.task(base=HeraldTask, name="herald.sweep.writeback")
def deliver_webhooks() -> dict[str, Any]:
    # Built to run side by side with the kicks (SKIP LOCKED, fenced outcomes): no lock, the run is recorded.
    return run_recorded("writeback", lambda: dict(writeback.deliver_due()))
