"""The directory file where it meets a process or the database: `herald directory check` (in bounded memory),
applying it, registering devices (its parsing and rules: tests/unit/test_directory.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from herald import db, directory
from herald.models import Device, Person
from tests.builders import ALIAS_BOMB, BROKEN_DIRECTORY
from tests.integration.conftest import ROOT, SAMPLE_DIRECTORY
from tests.integration.helpers import rows


def run_check(path: Path, memory_bytes: int = 1 << 30) -> subprocess.CompletedProcess[str]:
    """`herald directory check PATH` in a process that may use at most ``memory_bytes`` of address space."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return subprocess.run([sys.executable, "-m", "cli", "directory", "check", str(path)], cwd=ROOT,
                          env=os.environ.copy(), capture_output=True, text=True, timeout=60, preexec_fn=limit)


def test_an_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text("people: []\n" + ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 400
    done = run_check(path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"{path}:8: expands to more than 1,000,000 nodes through aliases: refused"]


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "folder"])
def test_what_is_not_a_regular_file_is_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "dir.yaml"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)  # nobody writes: a plain open() would block forever
    else:
        path.mkdir()
    done = run_check(path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{path}: not a regular file: not read"]


def test_cli_check_exits_2_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "dir.yaml"
    path.write_text(BROKEN_DIRECTORY)
    done = subprocess.run([sys.executable, "-m", "cli", "directory", "check", str(path)], cwd=ROOT,
                          env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) >= 6
    ok = subprocess.run([sys.executable, "-m", "cli", "directory", "check", str(SAMPLE_DIRECTORY)], cwd=ROOT,
                        env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ok (7 people" in ok.stdout


def test_apply_is_repeatable_and_people_removed_are_deactivated(clean: None, tmp_path: Path) -> None:
    with db.session() as s:
        directory.apply(directory.load(SAMPLE_DIRECTORY), s)
    with db.session() as s:
        directory.apply(directory.load(SAMPLE_DIRECTORY), s)  # twice: same result
    assert len(rows(select(Device.id))) == 9
    smaller = tmp_path / "small.yaml"
    smaller.write_text("people:\n  - id: alice\n    name: Alice\n"
                       "    devices: [{channel: fcm, token: apns-bruno-iphone}]\n")
    with db.session() as s:
        counts = directory.apply(directory.load(smaller), s)
    assert counts["deactivated_people"] == 6
    assert rows(select(Person.id).where(Person.active)) == [("alice",)]
    active = rows(select(Device.token, Device.person_id, Device.channel).where(Device.active).order_by(Device.id))
    # alice's old devices stay hers; bruno's devices went with him; the fcm token is new
    assert ("apns-bruno-iphone", "alice", "fcm") in active
    assert all(person == "alice" for _, person, _ in active)


def test_register_device_collapses_duplicates_and_follows_a_moved_token(sample_directory: None) -> None:
    from producers import register_device

    first = register_device("alice", "fcm", "shared-token")
    again = register_device("alice", "fcm", "shared-token")
    moved = register_device("emil", "fcm", "shared-token")
    assert first == again == moved
    assert rows(select(Device.person_id).where(Device.token == "shared-token")) == [("emil",)]
    with pytest.raises(ValueError, match="unknown channel 'sms'"):
        register_device("alice", "sms", "x")


def test_a_file_over_the_size_limit_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as f:
        f.write("people:\n")
        line = "  - {id: p, name: P}\n"
        f.write(line * (directory.MAX_FILE_BYTES // len(line) + 1))
    done = run_check(path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{path}: is {path.stat().st_size / 1048576:g} MB, larger than the "
                                        "limit of 5 MB"]
