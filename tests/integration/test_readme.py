"""The README tells the truth: its producer examples run, and it lists every setting."""

from __future__ import annotations

import contextlib
import io
import re

from sqlalchemy import func, select

from herald.models import Device, EventRow
from herald.settings import Settings
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


def test_every_setting_is_documented_and_the_readme_table_is_current() -> None:
    from devtools.settings_doc import DOCS, render

    assert [name for name in Settings.model_fields if name not in DOCS] == []
    assert [name for name in DOCS if name not in Settings.model_fields] == []
    assert render(README) == README, "run: python -m devtools.settings_doc README.md"
