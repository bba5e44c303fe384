"""Log lines cannot be forged: every entry's text is one line, whatever its message or task id holds."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from herald import logs

FORGED = "[2026-01-01 00:00:00,000: INFO/MainProcess] Task herald.ingest[x] succeeded in 0.01s: None"
ENTRY_START = re.compile(r"^\[\d{4}-\d\d-\d\d ")


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose one handler was set up the way Celery's are, then installed."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"))
    logger = logging.getLogger(f"herald.test_logs.{id(out)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logs.install(logger)
    yield logger, out
    logger.removeHandler(handler)


def test_a_newline_in_an_argument_cannot_start_a_new_entry(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    logger.warning("flow %s failed", f"orders\n{FORGED}", extra={"event_id": "e1\r\nX"})
    [line] = out.getvalue().splitlines()
    assert line.endswith(f"flow orders\\n{FORGED} failed [event_id=e1\\r\\nX]")


def test_control_and_bidi_characters_are_escaped_and_tabs_kept(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    logger.info("name %s", "\x1b[2J\x1b]0;owned\x07 \u202etxt.exe\u2028next\x85\ttab\u0000")
    [line] = out.getvalue().splitlines()
    assert line.endswith("name \\x1b[2J\\x1b]0;owned\\x07 \\u202etxt.exe\\u2028next\\x85\ttab\\x00")


def test_a_traceback_keeps_its_lines_but_the_exception_message_is_one_line(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError(f"bad input\n{FORGED}") from inner
    except ValueError:
        logger.exception("task failed: %s", "x\ny")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("task failed: x\\ny")
    assert lines.count("Traceback (most recent call last):") == 2
    assert "KeyError: 'inner'" in lines
    assert "The above exception was the direct cause of the following exception:" in lines
    assert lines[-1] == f"ValueError: bad input\\n{FORGED}"
    assert [n for n in lines if ENTRY_START.match(n)] == [lines[0]], "only the entry itself starts like one"


def test_the_record_is_left_as_it_was_for_other_handlers(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, _ = captured
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Keep())
    logger.warning("a %s", "b\nc")
    assert seen[0].getMessage().startswith("a b\nc")


def test_installing_twice_wraps_once(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    logs.install(logger)
    logger.warning("tab\tand \\n as text")
    assert out.getvalue().rstrip("\n").endswith("] tab\tand \\n as text")


# --- HERALD_LOG_FORMAT=json ----------------------------------------------------------------------


@pytest.fixture
def json_captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger set up as Celery's are, installed with the JSON format."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"))
    logger = logging.getLogger(f"herald.test_logs.json.{id(out)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logs.install(logger, "json")
    yield logger, out
    logger.removeHandler(handler)


def test_json_lines_carry_the_ids_as_fields(json_captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_captured
    event_id = uuid.uuid4()
    logger.info("batch %s sent", "b1", extra={"event_id": event_id, "notification_id": 7, "delivery_id": 9,
                                              "batch_id": "b1"})
    [line] = out.getvalue().splitlines()
    entry = json.loads(line)
    assert list(entry)[:5] == ["time", "level", "logger", "process", "message"]
    assert entry["message"] == "batch b1 sent" and entry["level"] == "INFO" and entry["logger"] == logger.name
    assert (entry["event_id"], entry["notification_id"], entry["delivery_id"], entry["batch_id"]) == (
        str(event_id), 7, 9, "b1")
    assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)
    assert not any(key.startswith("_") for key in entry), "no private attribute leaks into the line"


def test_inside_a_task_a_json_line_names_the_task(json_captured: tuple[logging.Logger, io.StringIO]) -> None:
    from celery import Celery

    logger, out = json_captured
    app = Celery("test_logs", set_as_current=False)

    @app.task(name="herald.test_logs.job")
    def job() -> None:
        logger.warning("inside")

    job.apply(task_id="t-123")
    [entry] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (entry["task_id"], entry["task_name"]) == ("t-123", "herald.test_logs.job")


def test_a_json_line_cannot_be_forged_and_keeps_its_traceback(
        json_captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_captured
    try:
        raise ValueError(f"bad\n{FORGED}")
    except ValueError:
        logger.exception("flow %s failed", f"orders\n{FORGED}\u202e\x1b[2J", extra={"event_id": "e1\nX"})
    [line] = out.getvalue().splitlines()
    assert line.isascii()
    entry = json.loads(line)
    assert entry["message"] == f"flow orders\n{FORGED}\u202e\x1b[2J failed"
    assert entry["event_id"] == "e1\nX"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith(f"ValueError: bad\n{FORGED}")


def test_the_text_format_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from herald.settings import Settings

    assert Settings().log_format == "text"
    monkeypatch.setenv("HERALD_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    assert logs.celery_options("json") == ["--quiet"] and logs.celery_options("text") == []
    config = logs.uvicorn_log_config("json")
    assert config["formatters"]["json"]["()"] is logs.JsonFormatter
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["access"]


def test_the_readme_json_line_is_what_the_formatter_writes(json_captured: tuple[logging.Logger, io.StringIO]) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    logs_section = readme.split("### Logs", 1)[1].split("\n### ", 1)[0]
    [example] = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", logs_section, flags=re.S)]
    logger, out = json_captured
    logger.info("batch %s", "b1", extra={"batch_id": example["batch_id"], "task_id": example["task_id"],
                                         "task_name": example["task_name"]})
    assert list(json.loads(out.getvalue())) == list(example)
