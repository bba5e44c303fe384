"""A bulk worker yields the CPU to the urgent pool on a shared host (cli/workers.py yield_cpu, herald/lanes.py).

Issue 11: ``HERALD_BULK_NICE=10`` measured no gain for a page during a burst. On Linux with autogroup scheduling
(``kernel.sched_autogroup_enabled``, on here and on most distributions) the CPU is shared between sessions first,
and every pool started by a supervisor, ``setsid`` or the benchmark leads a session of its own: a process's
niceness then orders it only against its own session. A bulk worker that leads its session now lowers the
session's group too; measured in bench/RESULTS.md (page-during-burst).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import traceback
from pathlib import Path

import psutil
import pytest

from cli.workers import yield_cpu
from tests.integration.conftest import Workers, wait_until

AUTOGROUP = Path("/proc/self/autogroup")

pytestmark = pytest.mark.skipif(not AUTOGROUP.exists(), reason="this kernel has no autogroup scheduling")


def autogroup_nice(pid: int) -> int:
    """The niceness of ``pid``'s autogroup, from ``/autogroup-N nice K``."""
    return int((Path("/proc") / str(pid) / "autogroup").read_text().split()[-1])


def session_group(text: str) -> str:
    """The niceness in an autogroup file's text, or ``""`` for a session in no autogroup of its own.

    A session the kernel put in its root group (started before autogroup was on, as CI's is) reads as an empty
    file; a worker's session (it leads one, ``setsid``) always has a group of its own.
    """
    return text.split()[-1] if text.strip() else ""


def forked(proc: subprocess.Popen[bytes]) -> list[int]:
    """Wait until a worker's pool has forked (it chose its priority before that) and return the pool's pids."""
    assert proc.poll() is None
    pool = wait_until(lambda: psutil.Process(proc.pid).children(), timeout_s=60,
                      message=f"worker {proc.pid} to fork its pool")
    return [child.pid for child in pool]


def test_a_bulk_worker_lowers_its_session_and_the_urgent_pool_keeps_the_normal_priority(workers: Workers) -> None:
    # given a bulk deliver pool and the urgent pool, each started in a session of its own (as a supervisor does)
    bulk = workers.start("deliver.fcm", env={"HERALD_BULK_NICE": "7"}, concurrency=1)
    urgent = workers.start("urgent", env={"HERALD_BULK_NICE": "7"}, concurrency=1)
    bulk_pool, urgent_pool = forked(bulk), forked(urgent)
    # then the bulk worker and its pool run at niceness 7, and so does their whole session against others
    for pid in (bulk.pid, *bulk_pool):
        assert os.getpriority(os.PRIO_PROCESS, pid) == 7
        assert autogroup_nice(pid) == 7
    # and the urgent worker and its pool keep the normal priority, process and session alike
    for pid in (urgent.pid, *urgent_pool):
        assert os.getpriority(os.PRIO_PROCESS, pid) == 0
        assert autogroup_nice(pid) == 0


def test_the_default_lowers_a_bulk_worker_by_ten(workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERALD_BULK_NICE", raising=False)
    bulk = workers.start("ingest", concurrency=1)
    forked(bulk)
    assert os.getpriority(os.PRIO_PROCESS, bulk.pid) == 10 and autogroup_nice(bulk.pid) == 10


def test_a_worker_that_shares_a_session_lowers_only_itself() -> None:
    # given a worker started from a shell, in the shell's session (a fork of this test: it does not lead it)
    mine = AUTOGROUP.read_text()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: choose its priority, then say what it runs at (or why it failed)
        code = 0
        try:
            said = io.StringIO()
            with contextlib.redirect_stderr(said):
                yield_cpu(5)
            report = f"{os.getpriority(os.PRIO_PROCESS, 0)} {session_group(AUTOGROUP.read_text())} {said.getvalue()!r}"
        except BaseException:  # noqa: BLE001 - a fork must report and exit, never return into pytest
            report, code = traceback.format_exc(), 1
        os.write(write, report.encode())
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    # then it runs at niceness 5 itself, says nothing, and its session (this test's, the shell beside it) is
    # left alone
    try:
        assert report.split(" ", 2) == ["5", session_group(mine), "''"]
        assert AUTOGROUP.read_text() == mine
    finally:  # a worker that lowered this session must not slow the rest of the run
        if session_group(mine):
            AUTOGROUP.write_text(session_group(mine))
