"""The protocol check every message passes before Celery sees it (herald/consumer.py): it names what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

CELERY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@pytest.mark.parametrize(("headers", "body", "reason"), [
    ({"task": "herald.enrich", "id": "i"}, [["x"], {}, CELERY_EMBED], None),
    ({"task": "herald.enrich", "id": "i", "retries": 2, "timelimit": [None, None]}, [["x"], {}, None], None),
    ({"task": "herald.enrich"}, [["x"], {}, None], "task message with no usable id header (id=None)"),
    ({"task": "herald.enrich", "id": ""}, [["x"], {}, None], "task message with no usable id header (id='')"),
    ({"task": ["herald.enrich"], "id": "i"}, [["x"], {}, None], "the task header is not a name: ['herald.enrich']"),
    ({"task": "herald.enrich", "id": "i", "retries": "many"}, [["x"], {}, None],
     "the retries header is not a count: 'many'"),
    ({"task": "herald.enrich", "id": "i", "timelimit": "abc"}, [["x"], {}, None],
     "the timelimit header is not [hard, soft]: 'abc'"),
    ({"task": "herald.enrich", "id": "i"}, {"args": ["x"]}, "the body is not [args, kwargs, embed] but dict"),
    ({"task": "herald.enrich", "id": "i"}, ["x", {}, None], "args is str, not a list"),
    ({"task": "herald.enrich", "id": "i"}, [["x"], ["y"], None], "kwargs is list, not a mapping"),
    ({"task": "herald.enrich", "id": "i"}, [["x"], {}, {"callbacks": "x"}],
     "embed callbacks is not a list of signatures"),
    ({}, {"task": "herald.enrich", "args": []}, "message is not a Celery task message (no task header)"),
])
def test_the_protocol_check_names_what_is_wrong(headers: dict[str, Any], body: Any, reason: str | None) -> None:
    from kombu.message import Message

    from herald.consumer import problem

    message = Message(body=json.dumps(body).encode(), headers=headers, content_type="application/json",
                      content_encoding="utf-8")
    assert problem(message) == reason
