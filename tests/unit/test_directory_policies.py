"""Escalation policies in the directory file: their format, every problem with its line, and what apply stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from herald import directory
from herald.errors import DirectoryError
from herald.models import EscalationPolicy, Route
from tests.unit.domain_helpers import memory_session

HEAD = """\
people:
  - {id: ann, name: Ann}
  - {id: ben, name: Ben}
teams:
  - {id: leads, members: [ann, ben]}
rotations:
  - {id: primary, members: [ann, ben], starts_at: 2026-01-01T00:00:00Z}
"""

GOOD = HEAD + """\
policies:
  - id: chain
    steps:
      - notify: {on_call: primary}
        importance: high
      - wait_min: 5
      - notify: {next_on_call: primary}
      - wait_min: 10
      - notify: {team: leads}
      - notify: {people: [ann, ben]}
      - wait_min: 15
    repeat: 2
routes:
  - id: failures
    match: {types: ["flow.*"]}
    recipients: [{team: leads}]
    escalation: chain
"""


def load(tmp_path: Path, text: str) -> directory.DirectorySpec:
    path = tmp_path / "dir.yaml"
    path.write_text(text)
    return directory.load(path)


def check(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dir.yaml"
    path.write_text(text)
    with pytest.raises(DirectoryError) as caught:
        directory.load(path)
    return [p.replace(str(path), "FILE") for p in caught.value.problems]


def test_a_policy_is_loaded_and_applied_with_its_route(tmp_path: Path) -> None:
    spec = load(tmp_path, GOOD)
    with memory_session() as s:
        counts = directory.apply(spec, s)
        assert counts["policies"] == 1
        policy = s.get_one(EscalationPolicy, "chain")
        assert policy.repeat == 2
        assert policy.steps == [
            {"notify": {"on_call": "primary"}, "importance": "high"}, {"wait_min": 5.0},
            {"notify": {"next_on_call": "primary"}, "importance": "normal"}, {"wait_min": 10.0},
            {"notify": {"team": "leads"}, "importance": "normal"},
            {"notify": {"people": ["ann", "ben"]}, "importance": "normal"}, {"wait_min": 15.0}]
        assert s.scalar(select(Route.escalation).where(Route.id == "failures")) == "chain"
        # applying again replaces the policies: one left out is gone
        directory.apply(load(tmp_path, GOOD.replace("    escalation: chain\n", "").split("policies:")[0]
                             + "routes: []\n"), s)
        assert s.scalars(select(EscalationPolicy)).all() == []


def test_unknown_references_are_named_with_their_line(tmp_path: Path) -> None:
    problems = check(tmp_path, HEAD + """\
policies:
  - id: chain
    steps:
      - notify: {on_call: secondary}
      - wait_min: 5
      - notify: {next_on_call: nobody}
      - notify: {team: ghosts}
      - notify: {people: [ann, zed]}
routes:
  - id: failures
    recipients: [{team: leads}]
    escalation: missing
""")
    assert problems == [
        "FILE:19: routes[0].escalation: unknown escalation policy 'missing'",
        "FILE:11: policies[0].steps[0].notify.on_call: unknown rotation 'secondary'",
        "FILE:13: policies[0].steps[2].notify.next_on_call: unknown rotation 'nobody'",
        "FILE:14: policies[0].steps[3].notify.team: unknown team 'ghosts'",
        "FILE:15: policies[0].steps[4].notify.people[1]: unknown person 'zed'",
    ]


def test_a_policy_that_repeats_without_waiting_is_refused(tmp_path: Path) -> None:
    problems = check(tmp_path, HEAD + """\
policies:
  - id: storm
    steps:
      - notify: {team: leads}
    repeat: 3
""")
    assert problems == ["FILE:9: policies[0]: a policy that repeats needs a wait_min step (it would page again "
                        "at once)"]


def test_malformed_steps_are_refused_with_their_line(tmp_path: Path) -> None:
    problems = check(tmp_path, HEAD + """\
policies:
  - id: bad
    steps:
      - notify: {team: leads, on_call: primary}
      - {notify: {team: leads}, wait_min: 5}
      - wait_min: 0
      - {wait_min: 5, importance: high}
      - notify: {team: leads}
        importance: loud
      - notify: {people: []}
  - id: silent
    steps:
      - wait_min: 5
  - id: bad
    steps: []
""")
    assert "FILE:11: policies[0].steps[0].notify: notify names exactly one of: on_call, next_on_call, team, people" \
        in problems
    assert "FILE:12: policies[0].steps[1]: a step is either notify (with an optional importance) or wait_min" \
        in problems
    assert any(p.startswith("FILE:13: policies[0].steps[2].wait_min: Input should be greater than 0") for p in problems)
    assert "FILE:14: policies[0].steps[3]: importance belongs to a notify step" in problems
    assert any(p.startswith("FILE:16: policies[0].steps[4].importance: Input should be 'normal' or 'high'")
               for p in problems)
    assert any(p.startswith("FILE:17: policies[0].steps[5].notify.people: List should have at least 1 item")
               for p in problems)
    assert "FILE:18: policies[1]: a policy needs at least one notify step" in problems
    assert any(p.startswith("FILE:22: policies[2].steps: List should have at least 1 item") for p in problems)
