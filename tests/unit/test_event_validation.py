"""Event input at the edge: bad input refused with a one-line reason (NUL, lone surrogates, deep nesting), and the
CloudEvents form read back as it was written.

Unit tests: validation runs before anything is sent or written, so no service is needed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app as cli
from herald.errors import InvalidEvent
from herald.events import MAX_DATA_DEPTH, validate_event
from producers import from_cloudevent, make_event, publish


def artifact(**extra: Any) -> dict[str, Any]:
    return {"type": "artifact.deployed", "environment": "dev",
            "data": {"artifact": "orders-api", "kind": "api", **extra}}


def nested(levels: int) -> dict[str, Any]:
    """``levels`` dicts inside each other (the outermost is level 1)."""
    value: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def refusal(event: dict[str, Any]) -> str:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(event)
    reason = str(caught.value)
    assert "\n" not in reason and "\r" not in reason, "the reason is one line"
    return reason


@pytest.mark.parametrize(("event", "expected"), [
    (artifact(note="before\u0000after"), "data.note: contains a NUL character (\\u0000), which cannot be stored"),
    ({**artifact(), "data": {"artifact": "orders\u0000api", "kind": "api"}}, "data.artifact: contains a NUL"),
    (artifact(deep={"list": ["ok", {"x": "\u0000"}]}), "data.deep.list[1].x: contains a NUL"),
    (artifact(keys={"bad\u0000key": 1}), "data.keys.bad\\x00key: contains a NUL"),
    ({**artifact(), "source": "cli\u0000"}, "source: contains a NUL"),
    ({**artifact(), "subject": "\u0000"}, "subject: contains a NUL"),
    ({**artifact(), "idempotency_key": "k\u0000"}, "idempotency_key: contains a NUL"),
    (artifact(note="half a pair \ud83d"), "data.note: contains a lone surrogate (\\ud83d), which cannot be stored"),
])
def test_what_postgres_cannot_store_is_refused_with_where_it_is(event: dict[str, Any], expected: str) -> None:
    assert refusal(event).startswith(expected)


def test_a_key_with_a_newline_is_shown_escaped_so_the_reason_stays_one_line() -> None:
    reason = refusal(artifact(**{"evil\nline": "\u0000"}))
    assert reason.startswith("data.evil\\nline: contains a NUL")


@pytest.mark.parametrize("levels", [MAX_DATA_DEPTH + 1, 300, 1000, 5000])
def test_data_nested_too_deep_is_an_invalid_event_not_a_crash(levels: int) -> None:
    # data itself is level 1, so the extra field's value starts at level 2
    reason = refusal(artifact(extra=nested(levels - 1)))
    assert reason.endswith(f"nested more than {MAX_DATA_DEPTH} levels deep")
    assert reason.startswith("data.extra.n.n.")
    assert len(reason) < 160


def test_lists_count_as_levels_too() -> None:
    value: Any = "leaf"
    for _ in range(MAX_DATA_DEPTH):
        value = [value]
    refusal(artifact(extra=value))  # data (1) + 32 lists = 33 levels


def test_data_exactly_at_the_depth_limit_is_accepted_unchanged() -> None:
    deepest = nested(MAX_DATA_DEPTH - 1)
    event = validate_event(artifact(extra=deepest, text="tabs\tand\nnewlines are fine in data"))
    assert event.data["extra"] == deepest
    assert event.data["text"] == "tabs\tand\nnewlines are fine in data"


def test_an_event_object_built_around_validation_is_still_checked() -> None:
    # model_copy skips pydantic validation: publish must still refuse what ingest could not store
    good = validate_event(artifact())
    bad = good.model_copy(update={"data": {**good.data, "note": "\u0000"}})
    with pytest.raises(InvalidEvent, match="data.note: contains a NUL"):
        validate_event(bad)


def test_the_producer_raises_invalid_event_before_sending() -> None:
    with pytest.raises(InvalidEvent, match="contains a NUL"):
        publish(artifact(note="\u0000"))
    with pytest.raises(InvalidEvent, match="nested more than"):
        publish(artifact(extra=nested(300)))


def run_publish(data: str) -> Any:
    return CliRunner().invoke(cli, ["publish", "artifact.deployed", "--environment", "dev", "--data", data])


@pytest.mark.parametrize(("data", "expected"), [
    (json.dumps({"artifact": "orders-api", "kind": "api", "note": "a\u0000b"}),
     "herald: invalid event: data.note: contains a NUL character"),
    (json.dumps({"artifact": "orders-api", "kind": "api", "extra": nested(300)}),
     "herald: invalid event: data.extra.n.n."),
    ('{"artifact": "a", "kind": "api", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "herald: --data is nested too deeply"),
])
def test_cli_publish_refuses_with_exit_2_and_one_line(data: str, expected: str) -> None:
    result = run_publish(data)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.output


def test_cloudevents_round_trip() -> None:
    event = make_event("business.order_submitted", {"topic": "orders.eu", "reference": "PO-1"}, environment="prod",
                       subject="PO-1", idempotency_key="po-1")
    body = event.to_cloudevent()
    assert body["specversion"] == "1.0" and body["idempotencykey"] == "po-1" and body["severity"] == "info"
    back = from_cloudevent(body)
    assert back.to_cloudevent() == body and back.id == event.id and back.time == event.time
