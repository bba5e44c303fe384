"""The Celery application. Producers only send by task name; workers import the tasks."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_shutdown, worker_ready

from herald import broker, heartbeats, logs, stamps


class HeraldCelery(Celery):
    """Celery, with countdowns RabbitMQ's delayed delivery can take."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, countdown: float | None = None,
                  eta: Any = None, **options: Any) -> Any:
        # An ingest task's argument is a whole event: Flower and the logs show its id and type only (the outbox
        # says so itself; this covers a retry, a dead letter's replay, Flower's own "apply").
        if name == "herald.ingest" and "argsrepr" not in options:
            from herald.outbox import ingest_argsrepr

            options.update(argsrepr=ingest_argsrepr(args or []), kwargsrepr="{}")
        # On quorum queues Celery delays a task through native delayed delivery, which takes whole seconds:
        # celery/app/base.py sends int(countdown), and kombu's calculate_routing_key raises ValueError for 0, so a
        # retry drawn below one second (full jitter) would fail
        # (https://github.com/celery/celery/blob/v5.7.0/celery/app/base.py, send_task).
        if countdown is not None and 0 < countdown < 1 and str(self.conf.broker_url).startswith(("amqp", "pyamqp")):
            countdown = 1
        return super().send_task(name, args, kwargs, countdown, eta, **options)


# Connected by importing them, in every process that loads the app: herald.stamps stamps each message with
# its publish time (the backlog scan reads it), herald.heartbeats is each worker's heartbeat.
SIGNAL_HANDLERS = (stamps, heartbeats)

app = HeraldCelery("herald")
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


@worker_process_shutdown.connect
def _metrics_process_dead(pid: int, **_: Any) -> None:
    from herald import metrics  # its live gauges' files must not outlive it (herald/metrics.py)

    metrics.process_dead(pid)
