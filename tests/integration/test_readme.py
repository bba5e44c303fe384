"""The README tells the truth: its producer examples run (its settings table: tests/unit/test_settings_doc.py)."""

from __future__ import annotations

import contextlib
import io
import re

from sqlalchemy import func, select

from herald.models import Device, EventRow
from tests.integration.conftest import ROOT, Workers, wait_until
from tests.integration.helpers import rows

README = (ROOT / "README.md").read_text()


def python_blocks(section: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_producer_examples_run_and_publish(workers: Workers, sample_directory: None) -> None:
    workers.start("all", concurrency=2, kind="threads")
    blocks = python_blocks("Producer API")
    assert len(blocks) == 3
    printed = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)  # our own README
    assert printed.getvalue().strip() == "unknown environment 'staging' (known: dev, test, prod)"
    # four distinct events: the flow failure published twice with one key counts once
    wait_until(lambda: rows(select(func.count()).select_from(EventRow))[0][0] == 4, message="four events")
    types = sorted(r.type for r in rows(select(EventRow.type)))
    assert types == ["approval.requested", "artifact.deployed", "business.order_submitted", "flow.failed"]
    assert rows(select(Device.person_id).where(Device.token == "fcm-token-from-the-app")) == [("alice",)]
