"""Structured log lines: every line a worker writes carries the ids it is about, and is one line.

Code logs with ``extra={"event_id": ..., "batch_id": ...}``; inside a task the task's name and
id are added too, so a person can grep one id through every pool's log.

Log text comes partly from outside: event fields, a task id from a broker message's headers, an
exception's message. A newline in any of them could forge a whole log entry ("[date: INFO/...]
... succeeded"), so :class:`OneLineFormatter` writes each entry's message as one line, with line
breaks and other control characters escaped (``\\n``, ``\\x1b``). A traceback keeps its lines, which
come from code, but the exception's own message in it is escaped the same way.

``HERALD_LOG_FORMAT=json`` writes each entry as one JSON object per line instead (python-json-logger's
formatter): ``time``, ``level``, ``logger``, ``process``, ``message``, and the ids as fields of their own
(``event_id``, ``notification_id``, ``delivery_id``, ``batch_id``, ``dead_letter_id``, ``task_id``,
``task_name``), so a log search filters on ``event_id`` rather than parsing text. JSON escapes every
line break and, ASCII-only, every control and bidi character: a JSON line cannot be forged either.
Text stays the default (a terminal). Workers and beat get it when Celery sets up their logging
(herald.app), the CLI and the API through :func:`configure` and :func:`uvicorn_log_config`.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from types import TracebackType
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as JsonFormatterBase

IDS = ("event_id", "notification_id", "delivery_id", "batch_id", "dead_letter_id", "task_id")
LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the CLI's and the API's text lines
# The ids as text, appended to a herald entry's message by the text format (set by IdsFilter).
_SUFFIX = "_herald_ids"

# Every character str.splitlines() breaks on, and the other C0/C1 controls, DEL, and the bidi controls
# that make a line read differently from what it contains. A tab stays: it breaks no line.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BREAKS = re.compile("[\x0a-\x0d\x1c-\x1e\x85\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape_one(found: re.Match[str]) -> str:
    char = found.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def one_line(text: str) -> str:
    """``text`` with line breaks and control characters written as escapes."""
    return _CONTROL.sub(_escape_one, text)


def _without_breaks(text: str) -> str:
    return _BREAKS.sub(_escape_one, text)


class IdsFilter(logging.Filter):
    """Adds the current task's name and id to a record, and the ids as text for the text format.

    Inside a task, ``task_id`` and ``task_name`` become attributes of the record (unless the code gave
    them): the JSON format writes them as fields. The text format appends
    ``[event_id=... task=... task_id=...]`` to the entries of herald's own loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUFFIX, None) is not None:
            return True
        parts = [f"{key}={getattr(record, key)}" for key in IDS if getattr(record, key, None) is not None]
        from celery import current_task

        request = getattr(current_task, "request", None)
        if request is not None and getattr(request, "id", None):
            if not hasattr(record, "task_id"):
                parts.append(f"task={current_task.name} task_id={request.id}")
                record.task_id = request.id
            if not hasattr(record, "task_name"):
                record.task_name = current_task.name
        herald = record.name.startswith(("herald", "workers", "schedules", "producers"))
        setattr(record, _SUFFIX, f" [{' '.join(parts)}]" if parts and herald else "")
        return True


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _traceback_lines(exc: traceback.TracebackException) -> list[str]:
    """As ``traceback.format_exception``, with each exception's message escaped to one line."""
    lines: list[str] = []
    if exc.__cause__ is not None:
        lines += _traceback_lines(exc.__cause__)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif exc.__context__ is not None and not exc.__suppress_context__:
        lines += _traceback_lines(exc.__context__)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if exc.stack:
        lines.append("Traceback (most recent call last):\n")
        lines += exc.stack.format()
    lines.append(one_line("".join(exc.format_exception_only()).rstrip("\n")) + "\n")
    return lines


def format_exception(exc_info: ExcInfo) -> str:
    """A traceback in which no exception message can start a line of its own."""
    exc = traceback.TracebackException(*exc_info)
    return "".join(_traceback_lines(exc)).rstrip("\n")


class OneLineFormatter(logging.Formatter):
    """Wraps a handler's formatter so that each entry's text is one line (plus its traceback).

    The message (``msg % args``) is escaped before the wrapped formatter sees it, so its own colours
    survive; what that formatter adds from elsewhere (Celery puts the task id of the message's
    headers in the prefix) has its line breaks escaped afterwards.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args, record.exc_info, record.exc_text, record.stack_info
        record.msg, record.args = one_line(record.getMessage() + getattr(record, _SUFFIX, "")), None
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            line = self.inner.format(record)
        finally:
            record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = saved
        line = _without_breaks(line) if getattr(self.inner, "use_color", False) else one_line(line)
        exc_info = record.exc_info
        if exc_info and exc_info[0] is not None and exc_info[1] is not None:
            line += "\n" + format_exception((exc_info[0], exc_info[1], exc_info[2]))
        if record.stack_info:
            line += "\n" + self.inner.formatStack(record.stack_info)
        return line


class JsonFormatter(JsonFormatterBase):
    """One JSON object per entry: time (ISO 8601, UTC), level, logger, process, message, then the ids and any
    other ``extra`` the code gave. ASCII only: no character in it can break or reorder a line."""

    def __init__(self) -> None:
        super().__init__(["levelname", "name", "processName", "message"], timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger", "processName": "process"},
                         reserved_attrs=[*RESERVED_ATTRS, _SUFFIX, "color_message"], json_ensure_ascii=True)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {"time": log_data.pop("time", None), **log_data}  # the time first, as in a text line


def log_format() -> LogFormat:
    from herald.settings import get_settings

    return get_settings().log_format


def install(logger: logging.Logger, fmt: LogFormat | None = None) -> None:
    """Add the ids, and one line per entry (text, or JSON with ``fmt="json"``), to every handler of ``logger``.

    Called when Celery sets up its logging (``after_setup_logger`` / ``after_setup_task_logger``), so
    every worker process writes through it; safe to call again. ``fmt`` defaults to HERALD_LOG_FORMAT.
    """
    fmt = fmt or log_format()
    for handler in logger.handlers:
        if not any(isinstance(f, IdsFilter) for f in handler.filters):
            handler.addFilter(IdsFilter())
        if fmt == "json":
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
        elif not isinstance(handler.formatter, OneLineFormatter):
            handler.setFormatter(OneLineFormatter(handler.formatter or logging.Formatter()))


def configure(level: int = logging.WARNING, fmt: LogFormat | None = None) -> None:
    """The root logger of a process Celery does not set up (the CLI, the API): one handler on stderr."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    fmt = fmt or log_format()
    install(root, fmt)
    if fmt == "json":  # Python's warnings (Celery warns before it sets up logging) as entries, not raw text
        logging.captureWarnings(True)


def celery_options(fmt: LogFormat | None = None) -> list[str]:
    """Celery's global options for ``herald worker`` and ``herald beat``: with JSON logs, no banner on stdout
    (it is not JSON; what it says is in the entries too)."""
    return ["--quiet"] if (fmt or log_format()) == "json" else []


def uvicorn_log_config(fmt: LogFormat | None = None) -> dict[str, Any]:
    """uvicorn's logging configuration (``herald api``): its own for text, herald's JSON lines for json, the
    API's own loggers included (through the root logger)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    if (fmt or log_format()) != "json":
        return copy.deepcopy(LOGGING_CONFIG)
    handler = {"class": "logging.StreamHandler", "formatter": "json", "filters": ["ids"]}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"ids": {"()": IdsFilter}},
        "handlers": {"default": {**handler, "stream": "ext://sys.stderr"},
                     "access": {**handler, "stream": "ext://sys.stdout"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
                    "uvicorn.error": {"level": "INFO"},
                    "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False}},
        "root": {"handlers": ["default"], "level": "INFO"},
    }
