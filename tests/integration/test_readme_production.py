"""The README's production setup, run as written: an event reaches a provider and its answer is written back.

The blocks of README "Production setup" run in one bash, in a fresh folder that holds what a clone
holds for them (the virtualenv and the sample directory), with this test session's Postgres database
and Redis prefix in place of block 2's addresses and any free ports for the fakes. Not run: the
install line (the virtualenv exists), the real providers' keys and Flower (a server in the foreground).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import select

from herald.models import AuditLog, Incident
from tests.integration.conftest import ROOT, TEST_ENV, track_log
from tests.integration.helpers import rows


def production_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Production setup\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def script() -> str:
    """The blocks this test runs, in order (see the module docstring for the ones it leaves out)."""
    run = []
    for block in production_blocks():
        if "make install" in block:
            assert "-c requirements.lock" in block and (ROOT / "requirements.lock").is_file()
            assert re.search(r"^install:", (ROOT / "Makefile").read_text(), re.MULTILINE)
            run.append("\n".join(line for line in block.splitlines() if not line.startswith("make install")))
        elif "HERALD_DATABASE_URL" in block or "HERALD_BACKEND_FCM=provider" in block or "herald flower" in block:
            continue
        else:
            run.append(block)
    assert len(run) == 5, "activate, fakes, migrate and pools, publish, answer"
    return "set -eu\n" + "\n".join(run) + '\necho "EVENT=$EVENT"\n'


def seen(control_url: str, provider: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{control_url}/seen/{provider}", timeout=10) as answer:
        return list(json.load(answer)["entries"])


def worker_mains(group: int) -> list[int]:
    """The main process of each `herald worker` in a process group (not its pool's forks, which share its
    command line)."""
    workers: dict[int, int] = {}
    for proc in psutil.process_iter(["ppid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        with contextlib.suppress(ProcessLookupError):  # ended while we looked
            if "worker" in argv and "--pool" in argv and os.getpgid(proc.pid) == group:
                workers[proc.pid] = proc.info["ppid"]
    return [pid for pid, parent in workers.items() if parent not in workers]


def stop(group: int) -> None:
    """Stop what the README started as an operator does: each worker warmly first (SIGTERM to its main process
    lets its pool finish the task in hand; SIGTERM to the whole group kills a task mid-run, an error in the
    worker's log), then the rest (beat, the api, the fakes)."""
    mains = worker_mains(group)
    for pid in mains:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) for pid in mains):
        time.sleep(0.2)
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_the_production_setup_publishes_to_a_provider_and_writes_the_answer_back(clean: None,
                                                                                  tmp_path: Path) -> None:
    # given a folder laid out as a fresh clone's (its virtualenv, the sample directory) and a shell
    # where herald is not on the PATH until the README activates the virtualenv
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "herald").symlink_to(ROOT / "herald")
    (tmp_path / "devtools").symlink_to(ROOT / "devtools")  # the sample directory: devtools/samples/directory.yaml
    venv_bin = str(ROOT / ".venv" / "bin")
    path = ":".join(p for p in os.environ["PATH"].split(":") if p != venv_bin)
    env = {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, **TEST_ENV, "PATH": path,
           "HERALD_FAKES_PORT": "0"}
    logs = tmp_path / ".herald" / "logs"
    # when the README's blocks run as written
    proc = subprocess.Popen(["bash", "-c", script()], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=150)
        for log in sorted(logs.glob("*.log")):
            track_log(log)  # the suite's guard fails the test on any error or traceback in them
        assert proc.returncode == 0, f"{err}\n{out}"
        event_id = out.strip().splitlines()[-1].removeprefix("EVENT=")
        # then the event reached a provider (its fake recorded the request, with the event's id)
        fakes_env = dict(line.split("=", 1) for line in (tmp_path / ".herald/fakes/fakes.env").read_text().split())
        control = fakes_env["HERALD_FAKES_CONTROL_URL"]
        received = [e for name in ("fcm", "apns") for e in seen(control, name) if e["status"] == 200]
        assert any(event_id in json.dumps(e) for e in received), received
        # and the answer was written back: the incident is acknowledged by chen, with its audit row
        assert rows(select(Incident.status, Incident.assignee)) == [("acknowledged", "chen")]
        assert rows(select(AuditLog.actor, AuditLog.action).where(AuditLog.action == "incident.acknowledged")) == [
            ("chen", "incident.acknowledged")]
        # and what the reader is told to look at shows it
        assert f"{event_id}" in out and '"status": "acknowledged"' in out and '"assignee": "chen"' in out
    finally:
        stop(proc.pid)
        if proc.poll() is None:
            proc.kill()
