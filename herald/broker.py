"""What herald adds to kombu's brokers: a Redis transport that survives restarts, a durability check, and
on RabbitMQ a guard that keeps a delivery's dead-letter headers off every message herald publishes.

celeryconfig calls :func:`install` on Redis, so that ``redis://`` and ``rediss://`` URLs get
:class:`RedisTransport`; a worker checks at start whether its Redis keeps what it confirmed
(:func:`check_redis_persistence`). On RabbitMQ it calls :func:`install_amqp`.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kombu.transport
import redis
from celery.app.task import X_DEATH_HEADERS
from celery.signals import before_task_publish
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, except that a channel detached from its connection fails as a lost connection.

    The crash it prevents (kombu 5.7.0, redis-py 7.4, and kombu issues #582 and #970 in older forms):
    when Redis goes away, Celery's consumer calls ``connection.collect()`` and then ``connection.close()``
    (celery/worker/consumer/consumer.py, ``on_connection_error_after_connected``). ``collect()`` closes the
    default channel; that close can fail half-way on the dead socket (``_brpop_read`` raising before
    ``virtual.Channel.close`` marks it closed), the error is swallowed, and ``_do_close_transport`` sets the transport's
    ``client`` to None. ``close()`` then closes the same, still open channel again: ``_disconnect_pools`` has
    dropped its pool, ``QoS.restore_unacked_once`` wants a new one, and ``_connparams`` reads
    ``self.connection.client.hostname`` on None. The AttributeError is neither a connection nor a channel
    error, so ``maybe_close_channel`` and ``ignore_errors`` let it through and Celery stops the worker
    ("Unrecoverable error"). Source:
    https://github.com/celery/kombu/blob/v5.7.0/kombu/transport/redis.py (``Channel._connparams``) and
    https://github.com/celery/kombu/blob/v5.7.0/kombu/connection.py (``collect``, ``_do_close_self``).

    Raising a redis ``ConnectionError`` instead is the truth (this channel has no connection any more), and
    it is one of the transport's ``connection_errors``: kombu swallows it, Celery reconnects. Nothing is
    lost by not restoring here: the unacknowledged messages are still in Redis's ``unacked`` hash, which
    ``restore_visible`` returns to their queues after the visibility timeout; if Redis forgot them (restarted
    without persistence), the outbox and recovery sweeps republish from Postgres.

    A workaround rather than a pin: no kombu release has a fix (5.7.0, the one installed, is the newest on
    PyPI). Drop this class once kombu guards ``_connparams`` or stops re-closing a half-closed channel.
    """

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            log.info("Redis channel closed after its connection was released: its unacknowledged messages "
                     "return after the visibility timeout (or from Postgres, through the sweeps)")
            raise redis.exceptions.ConnectionError("kombu channel is detached from its connection (closed)")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with herald's :class:`Channel`."""

    Channel = Channel


def install() -> None:
    """Have kombu pick :class:`RedisTransport` for ``redis://`` and ``rediss://`` URLs in this process.

    Through kombu's alias table rather than Celery's ``broker_transport`` setting: with the setting, kombu
    would name the transport by its import path in every URL it logs ("Cannot connect to
    herald.broker:RedisTransport://...") and lose the TLS defaults it ties to the ``rediss`` scheme.
    """
    for scheme in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:RedisTransport"
        kombu.transport._transport_cache.pop(scheme, None)  # resolved before install(): resolve again


def install_amqp() -> None:
    """RabbitMQ: publish no message with the ``x-death`` headers of the delivery it was made from.

    A countdown on quorum queues travels through Celery's native delayed delivery: a chain of queues
    ``celery_delayed_27`` .. ``celery_delayed_0`` whose messages expire into the next one, dead-lettered
    at-least-once. RabbitMQ records each hop in the message's ``x-death`` header and drops a message whose
    ``x-death`` already names the queue it is about to be dead-lettered to, with every death by expiry: a
    "dead-letter queues cycle" (one warning in RabbitMQ's log, nothing to the publisher). A retry is a new
    message, but herald's retry carries the request's headers forward (its outage and failure counts travel
    there), and on a worker those include the ``x-death`` of the delayed trip the message came by: the next
    retry whose delay passes a queue of the previous trip (a 1 s countdown, then a 3 s one: ``celery_delayed_0``
    twice) vanished. Measured: 17 of 30 accepted events lost in the Postgres-cut drill on RabbitMQ 3.10.8.

    Celery filters the same headers when it builds a retry's options (``Context.as_execution_options``), but
    not from headers a task passes to ``retry`` itself. herald's retry now carries only its own headers
    (herald/taskbase.py); this guard removes the ``x-death`` trail from every publish anyway, whatever path
    built it.
    """
    before_task_publish.connect(_drop_dead_letter_headers, weak=False, dispatch_uid=f"{__name__}.amqp")


def _drop_dead_letter_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers:
        for name in X_DEATH_HEADERS:
            headers.pop(name, None)


def check_redis_persistence(url: str) -> str | None:
    """Warn when the Redis broker at ``url`` would forget confirmed messages on a restart.

    Returns Redis's ``appendonly`` value (``"yes"``/``"no"``), or None when it cannot be read (CONFIG
    renamed or disabled, as managed Redis services often do; no Redis). Never raises: a worker starts anyway.
    """
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            config = cast(dict[str, Any], client.config_get("appendonly"))
            value = str(config.get("appendonly", "")) or None
        finally:
            client.close()
    except redis.exceptions.ResponseError as exc:
        log.warning("could not read Redis's persistence setting (CONFIG GET appendonly: %s): make sure the broker "
                    "runs with appendonly yes, or a Redis restart loses the events only it holds", exc)
        return None
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("could not check Redis's persistence setting: %s", exc)
        return None
    if value != "yes":
        log.warning(
            "the Redis broker has no append-only persistence (appendonly %s): a Redis restart loses every queued "
            "message. Events published through the outbox, or directly by a producer with HERALD_DATABASE_URL, "
            "are republished from Postgres (after HERALD_OUTBOX_GRACE_S); events published directly by a "
            "producer without a database are lost. Run Redis with appendonly yes (README: Durability).", value)
    return value
