"""Every task has a queue in the one routing table; every queue has a pool."""

from __future__ import annotations

import celeryconfig
from herald.app import app
from herald.lanes import POOLS, QUEUES, TASK_ROUTES


def test_every_registered_task_is_routed() -> None:
    # given every module the workers import
    app.loader.import_default_modules()
    herald_tasks = {name for name in app.tasks if not name.startswith("celery.")}
    # then each one has a route, and no route names a task that does not exist
    assert herald_tasks, "no tasks registered"
    assert herald_tasks - set(TASK_ROUTES) == set(), "unrouted tasks"
    assert set(TASK_ROUTES) - herald_tasks == set(), "routes for tasks that do not exist"


def test_every_routed_queue_is_consumed_by_a_pool() -> None:
    consumed = {q for pool in POOLS.values() for q in pool.queues}
    assert set(TASK_ROUTES.values()) <= consumed
    assert "retry" in consumed
    assert {q.name for q in celeryconfig.task_queues} == set(QUEUES)


def test_visibility_timeout_exceeds_every_countdown() -> None:
    from herald.settings import get_settings

    settings = get_settings()
    visibility_timeout = celeryconfig.broker_transport_options["visibility_timeout"]
    assert isinstance(visibility_timeout, int | float) and visibility_timeout > settings.retry_max_s
    assert celeryconfig.task_acks_late and celeryconfig.task_reject_on_worker_lost
