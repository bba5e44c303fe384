"""``herald migrate``, ``herald worker``, ``herald beat`` and ``herald flower``: the processes herald runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.output import EXIT_BAD_INPUT, err, fail, out

FLOWER_MIN_PASSWORD = 12


def migrate() -> None:
    """Create or upgrade herald's database schema (Alembic) to the latest revision.

    Example:

        HERALD_DATABASE_URL=postgresql+psycopg://herald@db/herald herald migrate
    """
    from herald import migrate as migrate_module
    from herald.settings import get_settings

    migrate_module.upgrade()
    url = get_settings().effective_database_url
    out.print(f"database at revision {migrate_module.current_head()} ({url.split('@')[-1]})")


def worker(
    pool: Annotated[str, typer.Option(help="Pool to run: ingest, enrich, resolve, deliver.fcm, "
                                           "deliver.apns, deliver.webpush, retry, sweeps, all, "
                                           "or several separated by commas.")],
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", help="Processes or threads.")] = None,
    kind: Annotated[str | None, typer.Option(help="Celery pool kind: prefork, threads, solo.")] = None,
    beat: Annotated[bool, typer.Option(help="Also run the beat scheduler in this worker.")] = False,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Start one worker pool (its own queue or queues), as `celery -A herald.app worker -Q ...` would.

    Examples:

        herald worker --pool resolve

        herald worker --pool deliver.apns --concurrency 4

        herald worker --pool ingest,enrich,resolve

        herald worker --pool all --beat     # one process for everything (development)
    """
    from herald.lanes import ALL_POOL, POOLS, pool_queues

    try:
        queues = pool_queues(pool)
    except KeyError as exc:
        fail(EXIT_BAD_INPUT, f"unknown pool {exc.args[0]!r} (known: {', '.join([*POOLS, ALL_POOL])})")
    spec = POOLS.get(pool)
    # one node name per process: Flower and `celery inspect` tell the workers apart
    node = f"{pool.replace(',', '+')}-{os.getpid()}@%h"
    from herald.logs import celery_options

    argv = [*celery_options(), "worker", "-Q", ",".join(queues), "-n", node, "-l", loglevel,
            "-c", str(concurrency or (spec.concurrency if spec else 2)),
            "--prefetch-multiplier", str(spec.prefetch_multiplier if spec else 1),
            "-P", kind or (spec.kind if spec else "prefork")]
    if beat:  # the embedded beat reads its table through the scheduler celeryconfig names (schedules/beat.py)
        argv += ["-B", "-s", str(_beat_file())]
    from herald.lanes import nice_for

    if nice := nice_for(queues):
        yield_cpu(nice)
    from herald.app import app as celery_app

    celery_app.worker_main(argv)


def yield_cpu(nice: int) -> None:
    """Lower this worker's CPU priority by ``nice``, before its pool forks (its processes inherit it).

    On Linux with autogroup scheduling (``kernel.sched_autogroup_enabled``, the default on most distributions)
    the CPU is shared between *sessions* first, so a process's own niceness only orders it against the
    processes of its session: a worker started in a session of its own (by a supervisor, ``setsid``, the
    benchmark) must lower its session's group too, or it yields nothing to another session's pages. A worker
    sharing a terminal's session lowers only itself, not the shell beside it.
    """
    os.nice(nice)
    autogroup = Path("/proc/self/autogroup")
    if os.getsid(0) != os.getpid() or not autogroup.exists():
        return
    try:
        autogroup.write_text(f"{nice}\n")
    except OSError as e:  # a kernel without the knob, or a read-only /proc: the process niceness still holds
        err.print(f"herald: could not lower this session's CPU priority ({e}): only the worker's own niceness "
                  "applies", markup=False, highlight=False)


def _beat_file() -> Path:
    from herald.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir / "celerybeat-schedule"


def beat(loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO") -> None:
    """Run celery beat with herald's schedule (schedules/beat.py). Run exactly one.

    Example:

        herald beat
    """
    from herald.app import app as celery_app
    from herald.logs import celery_options

    celery_app.start([*celery_options(), "beat", "-s", str(_beat_file()), "-l", loglevel])


def flower(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to listen on: loopback unless told otherwise "
                                              "(0.0.0.0 in a container whose port is published on localhost).")]
    = "127.0.0.1",
) -> None:
    """Start Flower, the operations dashboard, behind HTTP basic auth (HERALD_FLOWER_BASIC_AUTH=user:pass).

    Examples:

        HERALD_FLOWER_BASIC_AUTH=ops:s3cret herald flower --port 5555

        HERALD_FLOWER_BASIC_AUTH=ops:s3cret herald flower --address 0.0.0.0   # inside a container
    """
    auth = os.environ.get("HERALD_FLOWER_BASIC_AUTH")
    if not auth or ":" not in auth:
        fail(EXIT_BAD_INPUT, "set HERALD_FLOWER_BASIC_AUTH=user:password: Flower shows task arguments "
                             "and never runs without authentication")
    if len(auth.partition(":")[2]) < FLOWER_MIN_PASSWORD:  # "change-me" from an old example, say
        fail(EXIT_BAD_INPUT, f"HERALD_FLOWER_BASIC_AUTH: the password needs at least {FLOWER_MIN_PASSWORD} "
                             "characters (for example: openssl rand -hex 16)")
    from herald.app import app as celery_app

    celery_app.start(["flower", f"--address={address}", f"--port={port}", f"--basic-auth={auth}"])
