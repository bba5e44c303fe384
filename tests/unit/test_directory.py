"""The directory file: every problem named with its line and field, hostile YAML refused, rotations and quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from herald import directory
from herald.errors import DirectoryError
from herald.models import Person, Rotation
from tests.builders import BROKEN_DIRECTORY


def check(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dir.yaml"
    path.write_text(text)
    with pytest.raises(DirectoryError) as caught:
        directory.load(path)
    return [p.replace(str(path), "FILE") for p in caught.value.problems]


def test_schema_errors_name_the_line_and_field(tmp_path: Path) -> None:
    problems = check(tmp_path, BROKEN_DIRECTORY)
    assert "FILE:4: people[0].timezone: unknown time zone 'Mars/Olympus'" in problems
    assert any(p.startswith("FILE:6: people[0].devices[0].channel: Input should be 'fcm', 'apns', 'webpush' or 'email'")
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


def test_many_alias_uses_are_refused_even_when_small(tmp_path: Path) -> None:
    text = "people:\n  - &p {id: a, name: A}\n" + "  - *p\n" * 150
    assert check(tmp_path, text) == ["FILE:2: more than 100 alias uses (*name): refused"]
    # a few aliases stay usable (a shared block of settings, say)
    path = tmp_path / "few.yaml"
    path.write_text("people:\n  - {id: a, name: A, opt_out: &none [webpush]}\n  - {id: b, name: B, opt_out: *none}\n")
    assert [p.opt_out for p in directory.load(path).people] == [["webpush"], ["webpush"]]


def test_an_alias_to_itself_is_refused(tmp_path: Path) -> None:
    assert check(tmp_path, "people: &p [*p]\n") == ["FILE:1: an alias refers to a node that contains it: refused"]


def test_duplicate_keys_are_refused_at_every_level_with_both_lines(tmp_path: Path) -> None:
    two_people_blocks = "people:\n  - {id: ana, name: Ana}\nteams: []\npeople:\n  - {id: ben, name: Ben}\n"
    assert check(tmp_path, two_people_blocks) == ["FILE:4: duplicate key 'people' (first at line 1)"]
    nested = "people:\n  - id: ana\n    name: Ana\n    timezone: UTC\n    name: Other\n"
    assert check(tmp_path, nested) == ["FILE:5: duplicate key 'name' (first at line 3)"]
    flow = "routes:\n  - {id: r, id: s, recipients: [{team: t}]}\n"
    assert check(tmp_path, flow) == ["FILE:2: duplicate key 'id' (first at line 2)"]


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
