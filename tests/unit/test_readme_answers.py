"""README's "Answers, the HTTP API and write-back": its receiving-side example verifies what herald signs."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def receive_function() -> Any:
    body = README.split("## Answers, the HTTP API and write-back\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # our own README
    return namespace["receive"]


def signed(payload: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    now = datetime.now(UTC)
    signature = Webhook(secret).sign("msg_1", now, body.decode())
    return body, {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
                  "webhook-signature": signature}


def test_the_readme_receiver_accepts_what_herald_signs_and_refuses_the_rest() -> None:
    receive = receive_function()
    change = {"type": "incident.acknowledged", "subject": "incident:12", "data": {"by": "chen"}}
    body, headers = signed(change)
    assert receive(SECRET, body, headers) == change
    assert receive(SECRET, body.replace(b"chen", b"mallory"), headers) is None  # altered
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert receive(SECRET, *signed(change, other)) is None  # not signed with this endpoint's secret
    assert receive(SECRET, body, {}) is None  # no signature at all
