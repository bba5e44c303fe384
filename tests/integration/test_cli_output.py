"""The CLI prints what input holds as text, never as markup, and event ids whole.

Every command runs as a real process (`python -m cli ...`), 80 columns wide unless said otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from herald import db
from herald.models import (
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    Device,
    EventRow,
    Notification,
    Person,
    utcnow,
)
from tests.integration.conftest import ROOT

# Closing tags with no opening one crashed rich ("MarkupError"); the others would be styled away.
HOSTILE = "[/x] evil [bold]b[/bold] [link=file:///etc/passwd]l[/link] [/]"


def herald(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def add_event(event_id: uuid.UUID | None = None, **fields: object) -> uuid.UUID:
    event_id = event_id or uuid.uuid4()
    values: dict[str, object] = {"type": "artifact.deployed", "flow": "artifact", "source": "herald/test",
                                 "environment": "test", "severity": "info", "idempotency_key": str(event_id),
                                 "occurred_at": utcnow(), "data": {"artifact": "orders-api"}, "status": "resolved"}
    with db.session() as s:
        s.add(EventRow(id=event_id, **{**values, **fields}))
    return event_id


@pytest.mark.expect_dead_letters(r"^boom ")
def test_input_with_markup_is_printed_verbatim_by_every_command(clean: None, tmp_path: Path) -> None:
    # given an event, a person, a device, a delivery attempt, a dead letter and a credential whose text is markup
    event_id = add_event(source=HOSTILE, subject=HOSTILE, idempotency_key=HOSTILE, data={"note": HOSTILE})
    with db.session() as s:
        s.add(Person(id="x", name=HOSTILE))
        s.flush()
        device = Device(person_id="x", channel="fcm", token=HOSTILE, app="default")
        s.add(device)
        s.add(DeadLetter(kind="task", task_name=HOSTILE, reason=f"boom {HOSTILE}"))
        s.flush()
        note = Notification(event_id=event_id, person_id="x", route="r", reason=HOSTILE, status="sent")
        s.add(note)
        s.flush()
        delivery = Delivery(notification_id=note.id, event_id=event_id, device_id=device.id, channel="fcm",
                            batch_id=uuid.uuid4(), status="failed")
        s.add(delivery)
        s.flush()
        s.add(DeliveryAttempt(delivery_id=delivery.id, attempt=1, outcome="permanent", reason=HOSTILE))
    added = herald("credentials", "add", HOSTILE, "--expires-at", "2027-01-31", "--environment", "prod")
    assert added.returncode == 0, added.stderr
    # when each command that shows them runs, then it exits 0 and shows the text as it is
    for args in (["events", "show", str(event_id)], ["events", "list"], ["deadletters", "list"],
                 ["devices", "list"], ["credentials", "list"]):
        done = herald(*args, columns=250)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr
        if args != ["events", "list"]:  # tables wrap long cells at spaces: each markup tag stays whole
            assert "[/x]" in done.stdout and "[bold]b[/bold]" in done.stdout, (args, done.stdout)
    shown = herald("events", "show", str(event_id)).stdout
    assert f"source={HOSTILE}" in shown and f"key={HOSTILE}" in shown
    listed = herald("credentials", "list").stdout
    assert "[/x]" in listed  # the credential named "[/x] ..." broke this command for good


def test_paths_with_markup_are_printed_verbatim(clean: None, tmp_path: Path) -> None:
    folder = tmp_path / "[" / "x] certs"  # the path reads ".../[/x] certs"
    folder.mkdir(parents=True)
    (folder / "a.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    (folder / "b.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    done = herald("credentials", "import", str(folder))
    assert done.returncode == 0, done.stderr
    assert f"{folder}: 0 credential(s) read, 2 unreadable" in done.stdout
    directory_file = folder / "dir.yaml"
    directory_file.write_text("people: []\n")
    checked = herald("directory", "check", str(directory_file))
    assert checked.returncode == 0 and checked.stdout.startswith(f"{directory_file}: ok"), checked.stderr


# --- event ids: printed whole, and a unique prefix is enough -----------------------------------------


def test_events_list_prints_whole_ids_at_80_columns_and_show_takes_each(clean: None) -> None:
    ids = [add_event(type="response.follow_up_requested", flow="response", source="x" * 60) for _ in range(3)]
    done = herald("events", "list")
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    for event_id in ids:
        assert str(event_id) in done.stdout  # whole, on one line: copy it and it works
        shown = herald("events", "show", str(event_id))
        assert shown.returncode == 0 and str(event_id) in shown.stdout


def test_events_show_accepts_a_unique_prefix(clean: None) -> None:
    event_id = add_event()
    for prefix in (str(event_id)[:8], str(event_id)[:13].upper(), str(event_id)[:4]):
        done = herald("events", "show", prefix, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["event"]["id"] == str(event_id)


def test_an_ambiguous_or_unknown_prefix_exits_with_a_one_line_reason(clean: None) -> None:
    first = add_event(uuid.UUID("abcd0000-0000-4000-8000-000000000001"))
    second = add_event(uuid.UUID("abcd1111-0000-4000-8000-000000000002"))
    ambiguous = herald("events", "show", "abcd")
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.splitlines() == [f"herald: abcd is the start of 2 event ids ({first}, {second}): "
                                             "give more of it"]
    assert herald("events", "show", "abcd1").returncode == 0
    unknown = herald("events", "show", "ffff")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines() == ["herald: no event id starts with ffff (it may not be ingested yet)"]
    for bad in ("abc", "[/x] evil", "zzzz-not-hex", "%", "a" * 37):
        refused = herald("events", "show", bad)
        assert refused.returncode == 2, bad
        assert len(refused.stderr.splitlines()) == 1 and refused.stderr.startswith("herald: not an event id")


# --- flower listens on loopback unless told otherwise -----------------------------------------------
