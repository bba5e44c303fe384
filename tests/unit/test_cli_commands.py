"""CLI commands checked in process, with no service: flower's listening address, the devices command's help."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("args", "address"), [([], "127.0.0.1"), (["--address", "0.0.0.0"], "0.0.0.0")])
def test_flower_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch, args: list[str], address: str) -> None:
    from typer.testing import CliRunner

    from cli import main as cli
    from herald.app import app as celery_app

    started: list[list[str]] = []
    monkeypatch.setattr(celery_app, "start", started.append)
    monkeypatch.setenv("HERALD_FLOWER_BASIC_AUTH", "ops:long-random-password")
    done = CliRunner().invoke(cli.app, ["flower", *args])
    assert done.exit_code == 0, done.output
    assert started == [["flower", f"--address={address}", "--port=5555", "--basic-auth=ops:long-random-password"]]


def test_the_cli_help_registers_apns_with_an_app() -> None:
    from typer.testing import CliRunner

    from cli.main import app as cli

    result = CliRunner().invoke(cli, ["devices", "register", "--help"], env={"COLUMNS": "200"})
    apns_lines = [line for line in result.output.splitlines() if "register" in line and " apns " in line]
    assert apns_lines and all("--app" in line for line in apns_lines)
