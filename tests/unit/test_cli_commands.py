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


@pytest.mark.parametrize(("env", "said"), [
    ({"HERALD_CHANNEL_CIRCUIT_WINDOW_S": "-17.5"},
     ["herald: invalid setting HERALD_CHANNEL_CIRCUIT_WINDOW_S: Input should be greater than 0"]),
    ({"HERALD_BULK_NICE": "1234567", "HERALD_DELIVERY_DEADLINE_S": '{"critical": "soon-ish"}'},
     ["herald: invalid setting HERALD_DELIVERY_DEADLINE_S (at critical): Input should be a valid number, unable to "
      "parse string as a number",
      "herald: invalid setting HERALD_BULK_NICE: Input should be less than or equal to 19"]),
])
def test_an_invalid_setting_is_named_in_one_line_without_its_value(tmp_path, env: dict[str, str],
                                                                   said: list[str]) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    # given the embedded default (no service) and a setting herald cannot take
    base = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    done = subprocess.run([sys.executable, "-m", "cli", "status"], cwd=Path(__file__).resolve().parents[2],
                          env={**base, "HERALD_DATA_DIR": str(tmp_path), "COLUMNS": "200", **env},
                          capture_output=True, text=True, timeout=60)
    # then the command refuses it as bad input, naming each variable and what is wrong, not with a traceback
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert sorted(done.stderr.splitlines()) == sorted(said)
    # and never shows the value (a setting may hold a secret)
    assert not any(value in done.stderr for value in env.values())
