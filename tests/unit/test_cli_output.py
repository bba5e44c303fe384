"""cli.output: the one way every herald command reports a failure and prints JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import typer

from cli.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE, fail, print_json


@pytest.mark.parametrize("code", [EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE])
def test_fail_says_why_on_one_stderr_line_and_exits_with_its_code(code: int,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # given a reason that looks like rich markup and is longer than a terminal line
    reason = "[/x] " + "a-long-path/" * 20
    # when a command fails with it
    with pytest.raises(typer.Exit) as exited:
        fail(code, reason)
    # then it exits with the code, and stderr holds the reason whole, on one line, nothing on stdout
    captured = capsys.readouterr()
    assert exited.value.exit_code == code
    assert captured.err == f"herald: {reason}\n" and captured.out == ""


def test_print_json_writes_indented_json_with_objects_as_strings(capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime(2027, 1, 31, tzinfo=UTC)
    print_json({"at": at, "ids": [1, 2]})
    printed = capsys.readouterr().out
    assert json.loads(printed) == {"at": str(at), "ids": [1, 2]} and printed.startswith('{\n  "at"')
