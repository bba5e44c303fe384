"""The Docker image: installs from the lock file, and its unprivileged user can run every command.

There is no Docker engine here, so the image's promises are checked the way it keeps them: the
Dockerfile's own lines (the locked install, a data directory owned by the image's user) and `herald
beat` writing only into the data directory it is given, never into its working directory (root's /app
in the image, where it used to crash-loop).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.conftest import ROOT, track_log, wait_until

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_image_installs_the_locked_versions_and_owns_only_its_data_directory() -> None:
    assert re.search(r"COPY [^\n]*requirements\.lock", DOCKERFILE)
    assert re.search(r"pip install [^\n]*-c requirements\.lock \.", DOCKERFILE)
    data_dir = re.search(r"HERALD_DATA_DIR=(\S+)", DOCKERFILE)
    assert data_dir, "the image must say where herald keeps its data"
    assert re.search(rf"install -d -o herald -g herald -m 700 {re.escape(data_dir.group(1))}\b", DOCKERFILE)
    assert "\nUSER herald\n" in DOCKERFILE


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split(";")[0].split("#")[0].strip().split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_environment_runs_the_locked_versions() -> None:
    from importlib.metadata import version

    pins = _locked()
    for name in ("celery", "kombu", "sqlalchemy", "psycopg", "redis", "aiohttp", "pydantic"):
        assert version(name) == pins[name], f"{name} {version(name)} is not the locked {pins[name]}"


def test_beat_writes_only_into_its_data_directory(clean: None) -> None:
    """The image's user owns HERALD_DATA_DIR and nothing else: beat must not write to its working directory.

    (The test cannot switch to an unprivileged user here: the interpreter sits in root's home.)
    """
    workdir = Path(tempfile.mkdtemp(prefix="herald-app-"))
    data_dir = Path(tempfile.mkdtemp(prefix="herald-data-")) / "state"
    log_path = track_log(data_dir.parent / "beat.log")
    env = {**os.environ, "HERALD_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "beat"], cwd=workdir, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: any(data_dir.glob("celerybeat-schedule*")) or proc.poll() is not None, timeout_s=60,
                   message="beat's schedule file in the data directory")
        time.sleep(1)
        assert proc.poll() is None, f"beat exited: {log_path.read_text()[-2000:]}"
        assert not any(workdir.iterdir()), "beat wrote into its working directory"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(data_dir.parent, ignore_errors=True)
