"""The directory file: precise errors, applying it, on-call and quiet hours."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from herald import db, directory
from herald.errors import DirectoryError
from herald.models import Device, Person, Rotation
from tests.integration.conftest import ROOT, SAMPLE_DIRECTORY
from tests.integration.helpers import rows

BROKEN = """\
people:
  - id: ana
    name: Ana
    timezone: Mars/Olympus
    devices:
      - {channel: pager, token: x}
  - id: ben
    name: Ben
    quiet_hours: ["25:00", "07:00"]
    devices:
      - {channel: webpush, token: not-a-subscription}
  - id: ana
    name: Ana again
teams:
  - id: ops
    members: [ana, zoe]
routes:
  - id: r1
    match: {types: ["artefact.*"]}
    recipients: [{team: nobody}]
  - id: r2
    recipients: [{team: ops, person: ana}]
"""


def check(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dir.yaml"
    path.write_text(text)
    with pytest.raises(DirectoryError) as caught:
        directory.load(path)
    return [p.replace(str(path), "FILE") for p in caught.value.problems]


def test_schema_errors_name_the_line_and_field(tmp_path: Path) -> None:
    problems = check(tmp_path, BROKEN)
    assert "FILE:4: people[0].timezone: unknown time zone 'Mars/Olympus'" in problems
    assert any(p.startswith("FILE:6: people[0].devices[0].channel: Input should be 'fcm', 'apns' or 'webpush'")
               for p in problems)
    assert "FILE:9: people[1].quiet_hours: '25:00' is not a time of day like 22:00" in problems
    assert "FILE:11: people[1].devices[0]: a webpush device needs exactly one of: subscription" in problems
    assert "FILE:19: routes[0].match.types: 'artefact.*' matches no event type" in problems
    assert any(p.startswith("FILE:22: routes[1].recipients[0]: each recipient names exactly one of") for p in problems)


def test_reference_errors_are_reported_after_the_schema_is_fixed(tmp_path: Path) -> None:
    text = """\
people:
  - {id: ana, name: Ana}
  - {id: ana, name: Ana again}
teams:
  - id: ops
    members: [ana, zoe]
rotations:
  - {id: r, members: [ana, max], starts_at: 2026-01-01T00:00:00Z}
resources:
  - {kind: flow, name: f, owners: [team:ghosts, ana]}
routes:
  - id: x
    recipients: [{team: nobody}, {on_call: night}]
"""
    assert check(tmp_path, text) == [
        "FILE:3: people[1].id: duplicate id 'ana'",
        "FILE:6: teams[0].members[1]: unknown person 'zoe'",
        "FILE:8: rotations[0].members[1]: unknown person 'max'",
        "FILE:10: resources[0].owners[0]: unknown owner 'team:ghosts' (write team:ID or person:ID)",
        "FILE:10: resources[0].owners[1]: unknown owner 'ana' (write team:ID or person:ID)",
        "FILE:13: routes[0].recipients[0].team: unknown team 'nobody'",
        "FILE:13: routes[0].recipients[1].on_call: unknown rotation 'night'",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    assert check(tmp_path, "people:\n  - id: a\n    name: [unclosed\n") == [
        "FILE:4: not valid YAML: did not find expected ',' or ']'"]


# --- hostile files: a clear one-line refusal, fast, in bounded memory, never echoing the content ------

# 342 bytes that expand to 9**9 (387 million) strings: it took 12 GB within two minutes.
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


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


def test_many_alias_uses_are_refused_even_when_small(tmp_path: Path) -> None:
    text = "people:\n  - &p {id: a, name: A}\n" + "  - *p\n" * 150
    assert check(tmp_path, text) == ["FILE:2: more than 100 alias uses (*name): refused"]
    # a few aliases stay usable (a shared block of settings, say)
    path = tmp_path / "few.yaml"
    path.write_text("people:\n  - {id: a, name: A, opt_out: &none [webpush]}\n  - {id: b, name: B, opt_out: *none}\n")
    assert [p.opt_out for p in directory.load(path).people] == [["webpush"], ["webpush"]]


def test_an_alias_to_itself_is_refused(tmp_path: Path) -> None:
    assert check(tmp_path, "people: &p [*p]\n") == ["FILE:1: an alias refers to a node that contains it: refused"]


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


def test_duplicate_keys_are_refused_at_every_level_with_both_lines(tmp_path: Path) -> None:
    two_people_blocks = "people:\n  - {id: ana, name: Ana}\nteams: []\npeople:\n  - {id: ben, name: Ben}\n"
    assert check(tmp_path, two_people_blocks) == ["FILE:4: duplicate key 'people' (first at line 1)"]
    nested = "people:\n  - id: ana\n    name: Ana\n    timezone: UTC\n    name: Other\n"
    assert check(tmp_path, nested) == ["FILE:5: duplicate key 'name' (first at line 3)"]
    flow = "routes:\n  - {id: r, id: s, recipients: [{team: t}]}\n"
    assert check(tmp_path, flow) == ["FILE:2: duplicate key 'id' (first at line 2)"]


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


def test_errors_never_echo_the_files_content(tmp_path: Path) -> None:
    secret = "hunter2-s3cr3t"
    texts = [f"root:{secret}:19000:0:99999:7:::\nx: [\n", f"people: *{secret}\n", f"a:\t{secret}\n  b: c\n: :",
             f"!!python/object/apply:os.system ['{secret}']\n", f"key: '{secret}\n"]
    for text in texts:
        problems = check(tmp_path, text)
        assert len(problems) == 1 and problems[0].startswith("FILE:"), problems
        assert secret not in problems[0] and "hunter" not in problems[0], problems
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"people: [\xff\xfe" + secret.encode() + b"]\n")
    with pytest.raises(DirectoryError) as caught:
        directory.load(binary)
    assert caught.value.problems == [f"{binary}: not UTF-8 text (byte 9): not read"]


def test_cli_check_exits_2_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "dir.yaml"
    path.write_text(BROKEN)
    done = subprocess.run([sys.executable, "-m", "cli", "directory", "check", str(path)], cwd=ROOT,
                          env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) >= 6
    ok = subprocess.run([sys.executable, "-m", "cli", "directory", "check", str(SAMPLE_DIRECTORY)], cwd=ROOT,
                        env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ok (6 people" in ok.stdout


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
    assert counts["deactivated_people"] == 5
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


def test_on_call_rotates_by_shift() -> None:
    rotation = Rotation(id="r", members=["a", "b", "c"], shift_hours=24,
                        starts_at=datetime(2026, 1, 1, 9, tzinfo=UTC))
    assert directory.on_call_now(rotation, datetime(2025, 12, 31, tzinfo=UTC)) is None
    assert directory.on_call_now(rotation, datetime(2026, 1, 1, 9, tzinfo=UTC)) == "a"
    assert directory.on_call_now(rotation, datetime(2026, 1, 2, 8, 59, tzinfo=UTC)) == "a"
    assert directory.on_call_now(rotation, datetime(2026, 1, 2, 9, tzinfo=UTC)) == "b"
    assert directory.on_call_now(rotation, datetime(2026, 1, 4, 9, tzinfo=UTC)) == "a"


@pytest.mark.parametrize(("utc_time", "quiet"), [
    ("2026-06-01T20:30:00", True),   # 22:30 in Paris (summer time)
    ("2026-06-01T04:59:00", True),   # 06:59 in Paris
    ("2026-06-01T05:00:00", False),  # 07:00 in Paris: awake
    ("2026-06-01T12:00:00", False),
])
def test_quiet_hours_span_midnight_in_the_persons_time_zone(utc_time: str, quiet: bool) -> None:
    person = Person(id="p", name="P", timezone="Europe/Paris", quiet_hours=["22:00", "07:00"])
    assert directory.in_quiet_hours(person, datetime.fromisoformat(utc_time).replace(tzinfo=UTC)) is quiet
