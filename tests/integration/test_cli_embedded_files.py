"""The embedded default's files are readable by their owner only: they hold Web Push auth secrets."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import ROOT


def herald(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI on the embedded default (no database or broker URL) with a permissive umask."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env["HERALD_DATA_DIR"] = str(data_dir)
    return subprocess.run(["sh", "-c", 'umask 022; exec "$@"', "sh", sys.executable, "-m", "cli", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_data_dir_is_0700_and_its_sqlite_files_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / ".herald"
    # given a fresh data directory, when the schema is created and an event is published to the embedded broker
    assert herald(data_dir, "migrate").returncode == 0
    published = herald(data_dir, "publish", "artifact.deployed", "--data", '{"artifact": "orders-api", "kind": "api"}')
    assert published.returncode == 0, published.stderr
    # then the folder and every SQLite file in it (journals included) are the owner's alone
    assert mode(data_dir) == 0o700
    files = sorted(p.name for p in data_dir.iterdir() if "sqlite" in p.name)
    assert {"herald.sqlite", "broker.sqlite"} <= set(files)
    assert {name: mode(data_dir / name) for name in files} == {name: 0o600 for name in files}


def test_files_created_world_readable_before_are_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / ".herald"
    data_dir.mkdir()
    for name in ("herald.sqlite", "broker.sqlite"):
        (data_dir / name).touch()
        (data_dir / name).chmod(0o644)
    assert herald(data_dir, "migrate").returncode == 0
    assert mode(data_dir / "herald.sqlite") == mode(data_dir / "broker.sqlite") == 0o600
