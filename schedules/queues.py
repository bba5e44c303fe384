"""How deep each queue is and how old its oldest waiting message, on Redis and on RabbitMQ.

Redis (kombu's layout): a queue is a list plus one sub-list per priority step
(``queue\\x06\\x163``, ``\\x06\\x166``, ``\\x06\\x169``), all behind the broker key prefix;
producers LPUSH and workers BRPOP, so the oldest message is each list's last element.
Messages a worker has taken but not acknowledged (acks_late) wait in the ``unacked`` hash as
``[message, exchange, routing_key]``: they count in the depth too. Reading a list's tail
(LINDEX -1) is a pure read; nothing is moved.

RabbitMQ: a passive ``queue_declare`` answers the number of ready messages without the
management plugin; messages delivered but unacknowledged are not in it. The age comes from
the head message, taken with ``basic_get`` and put back with ``basic_reject(requeue=True)``,
which RabbitMQ returns to its original position (HERALD_BACKLOG_RABBITMQ_PEEK=false turns it off).
https://www.rabbitmq.com/docs/confirms#consumer-nacks-requeue

Both read the ``herald_published_at`` header that herald.stamps puts on every message.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from herald.settings import get_settings
from herald.stamps import HEADER

log = logging.getLogger(__name__)

REDIS_PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default ``priority_steps``
REDIS_PRIORITY_SEP = "\x06\x16"


@dataclass(frozen=True)
class QueueStats:
    queue: str
    waiting: int
    unacked: int | None  # None where the broker does not say (RabbitMQ without management)
    oldest_age_s: float | None  # None when empty or nothing stamped

    @property
    def depth(self) -> int:
        return self.waiting + (self.unacked or 0)


def _stamp(message: dict[str, Any]) -> float | None:
    value = (message.get("headers") or {}).get(HEADER)
    return float(value) if isinstance(value, int | float) else None


def redis_stats(url: str, queues: list[str], prefix: str = "", *, now: float | None = None) -> list[QueueStats]:
    import redis

    now = now if now is not None else time.time()
    timeout = get_settings().publish_timeout_s
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        keys = {q: [prefix + q if step == 0 else f"{prefix}{q}{REDIS_PRIORITY_SEP}{step}"
                    for step in REDIS_PRIORITY_STEPS] for q in queues}
        pipe = client.pipeline(transaction=False)
        for q in queues:
            for key in keys[q]:
                pipe.llen(key)
                pipe.lindex(key, -1)
        answers = pipe.execute()
        entries = cast(list[bytes], client.hvals(prefix + "unacked"))  # [message, exchange, routing_key]
        unacked = Counter(json.loads(raw)[2] for raw in entries)
    finally:
        client.close()
    stats = []
    for i, q in enumerate(queues):
        chunk = answers[i * 2 * len(REDIS_PRIORITY_STEPS):(i + 1) * 2 * len(REDIS_PRIORITY_STEPS)]
        waiting = sum(int(n) for n in chunk[0::2])
        stamps = [s for raw in chunk[1::2] if raw is not None and (s := _stamp(json.loads(raw))) is not None]
        stats.append(QueueStats(q, waiting, unacked.get(q, 0), now - min(stamps) if stamps else None))
    return stats


def amqp_stats(url: str, queues: list[str], *, peek: bool = True, now: float | None = None) -> list[QueueStats]:
    from amqp.exceptions import NotFound
    from kombu import Connection

    now = now if now is not None else time.time()
    stats = []
    with Connection(url, connect_timeout=get_settings().publish_timeout_s) as conn:
        channel = conn.channel()
        for q in queues:
            try:
                _name, ready, _consumers = channel.queue_declare(queue=q, passive=True)
            except NotFound:  # never declared: nothing waits in it (the error closed the channel)
                channel = conn.channel()
                stats.append(QueueStats(q, 0, None, None))
                continue
            age = None
            if peek and ready:
                message = channel.basic_get(queue=q, no_ack=False)
                if message is not None:
                    headers = message.properties.get("application_headers") or {}
                    stamp = headers.get(HEADER)
                    channel.basic_reject(message.delivery_tag, requeue=True)
                    age = now - float(stamp) if isinstance(stamp, int | float) else None
            stats.append(QueueStats(q, int(ready), None, age))
        channel.close()
    return stats


def generic_stats(url: str, queues: list[str]) -> list[QueueStats]:
    """Any other kombu transport (the embedded SQLite broker): depth only."""
    from kombu import Connection

    with Connection(url) as conn:
        channel = conn.default_channel
        return [QueueStats(q, int(channel.queue_declare(queue=q, passive=True)[1]), None, None) for q in queues]


def queue_stats(queues: list[str], *, broker_url: str | None = None, now: float | None = None) -> list[QueueStats]:
    """Depth and oldest age of each queue on herald's broker (or on ``broker_url``)."""
    settings = get_settings()
    url = broker_url or settings.effective_broker_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        return redis_stats(url, queues, settings.broker_key_prefix, now=now)
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return amqp_stats(url.replace("pyamqp://", "amqp://", 1), queues, peek=settings.backlog_rabbitmq_peek,
                          now=now)
    return generic_stats(url, queues)
