"""Worker heartbeats: each worker process says in Postgres, every few seconds, that it is alive.

``herald status`` reads them (schedules/status.py): a pool with no worker whose heartbeat is recent
(``HERALD_HEARTBEAT_TIMEOUT_S``) is down, whether its worker was killed, crashed on a broker restart,
or hangs.

Why a row written by a thread of the worker's main process, not ``celery inspect ping``:
- a ping is a broadcast round trip through the broker: the embedded SQLite transport has no
  broadcast, and with the broker down every pool would look down (one fault reported as eight);
- a solo worker busy with a long task does not answer a ping, and a prefork one answers only once its
  event loop gets to it; a thread answers while the pool works;
- a row says since when a pool is silent, and ``herald status`` needs no broker to read it;
- the thread writes off the worker's event loop, so a slow or unreachable database never stalls the
  consumer (a write that fails is a warning, and the next one tries again).

The thread lives in the worker's main process only (a forked pool child does not inherit threads):
the main process is the one that consumes; a dead child is replaced by it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)

_stop = threading.Event()
_node: dict[str, Any] = {}


def beat(node: str, hostname: str, pid: int, queues: list[str], *, started: bool = False) -> None:
    """Record one heartbeat (the first, ``started``, also forgets this host's dead workers of the same queues)."""
    from sqlalchemy import delete
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    from herald import db
    from herald.models import WorkerHeartbeat, utcnow
    from herald.settings import get_settings

    now = utcnow()
    insert = pg_insert if db.is_postgres() else sqlite_insert
    with db.session() as s:
        if started:
            # this worker replaces them: they would only say "down" for ever. Their row stays until then.
            dead_before = now.timestamp() - get_settings().heartbeat_timeout_s
            for row in s.query(WorkerHeartbeat).filter(WorkerHeartbeat.hostname == hostname,
                                                        WorkerHeartbeat.node != node):
                if sorted(row.queues) == sorted(queues) and row.last_seen.timestamp() < dead_before:
                    s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.node == row.node))
        s.execute(insert(WorkerHeartbeat).values(node=node, hostname=hostname, pid=pid, queues=queues,
                                                 started_at=now, last_seen=now, stopped_at=None)
                  .on_conflict_do_update(index_elements=["node"],
                                         set_={"last_seen": now, "stopped_at": None, "pid": pid}))


def _loop(node: str, hostname: str, pid: int, queues: list[str]) -> None:
    from herald.settings import get_settings

    interval_s = get_settings().heartbeat_interval_s
    first, failing = True, False
    while not _stop.is_set():
        try:
            beat(node, hostname, pid, queues, started=first)
            first = False
            if failing:
                log.warning("heartbeat of %s recorded again", node)
            failing = False
        except Exception as exc:  # noqa: BLE001 - the database is away: try again next time
            if not failing:
                log.warning("could not record the heartbeat of %s: %r", node, exc)
            failing = True
        _stop.wait(interval_s)


@worker_ready.connect(weak=False)
def start(sender: Any = None, **_: Any) -> None:
    consumer = sender
    queues = sorted(consumer.app.amqp.queues.consume_from or consumer.app.amqp.queues)
    hostname = str(consumer.hostname)
    _node.update(node=hostname, hostname=hostname.split("@", 1)[-1], pid=os.getpid(), queues=queues)
    _stop.clear()
    threading.Thread(target=_loop, args=(hostname, _node["hostname"], os.getpid(), queues), daemon=True,
                     name="herald-heartbeat").start()


@worker_shutdown.connect(weak=False)
def stop(**_: Any) -> None:
    """A warm shutdown says so: status then shows the pool stopped rather than silent."""
    _stop.set()
    if not _node or _node.get("pid") != os.getpid():
        return
    try:
        from sqlalchemy import update

        from herald import db
        from herald.models import WorkerHeartbeat, utcnow

        with db.session() as s:
            s.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.node == _node["node"])
                      .values(stopped_at=utcnow()))
    except Exception as exc:  # noqa: BLE001 - it goes silent instead, which status reports the same way
        log.warning("could not record that %s stopped: %r", _node["node"], exc)
