"""The Celery application. Producers only send by task name; workers import the tasks."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_ready

from herald import broker, logs

app = Celery("herald")
app.config_from_object("celeryconfig")


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_ids(logger: logging.Logger, *args: Any, **kwargs: Any) -> None:
    logs.install(logger)


@worker_ready.connect
def _check_broker_durability(**_: Any) -> None:
    # A Redis without append-only persistence forgets on restart what it confirmed: say so where operators look.
    if app.conf.broker_url.startswith(("redis://", "rediss://")):
        broker.check_redis_persistence(app.conf.broker_url)
