"""`herald people show`, `herald audit list` on real rows, and the progress bars of the long commands (on a terminal
only). Every command runs as a real process, as in tests/integration/test_cli_output.py."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from herald import db
from herald.models import (
    Answer,
    AuditLog,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    Device,
    Notification,
    Person,
    Team,
    TeamMember,
    utcnow,
)
from tests.integration.conftest import ROOT
from tests.integration.test_cli_output import add_event, herald


def given_chen() -> dict[str, Any]:
    """Chen (alias chen.w, on team ops) with an active phone and a retired browser, paged twice, who answered once
    and was refused once; and Dana, removed from the directory."""
    now = utcnow()
    paged = add_event(type="flow.failed", flow="failure", environment="prod", severity="error",
                      received_at=now - timedelta(minutes=5))
    older = add_event(type="artifact.deployed", environment="test", received_at=now - timedelta(days=2))
    with db.session() as s:
        s.add(Team(id="ops", name="Operations"))
        s.add(Person(id="chen", name="Chen Wu", email="Chen@Example.com", aliases=["chen.w"]))
        s.add(Person(id="dana", name="Dana", active=False))
        s.flush()
        s.add(TeamMember(team_id="ops", person_id="chen"))
        phone = Device(person_id="chen", channel="fcm", token="fcm-token-0123456789abcdef", app="admin")
        browser = Device(person_id="chen", channel="webpush", token='{"endpoint": "https://push.example/x"}',
                         active=False, deactivated_at=now, deactivated_reason="410 Gone")
        s.add_all([phone, browser])
        s.flush()
        page = Notification(event_id=paged, person_id="chen", route="prod-failures", reason="on call for ops",
                            status="sent", created_at=now - timedelta(minutes=5))
        info = Notification(event_id=older, person_id="chen", route="deploys", reason="owner of orders-api",
                            status="failed", created_at=now - timedelta(days=2))
        s.add_all([page, info])
        s.flush()
        sent = Delivery(notification_id=page.id, event_id=paged, device_id=phone.id, channel="fcm",
                        batch_id=uuid.uuid4(), status="sent", attempts=1, sent_at=now)
        failed = Delivery(notification_id=info.id, event_id=older, device_id=browser.id, channel="webpush",
                          batch_id=uuid.uuid4(), status="failed", attempts=1)
        s.add_all([sent, failed])
        s.flush()
        s.add(DeliveryAttempt(delivery_id=sent.id, attempt=1, outcome="sent", provider_status="200"))
        s.add(DeliveryAttempt(delivery_id=failed.id, attempt=1, outcome="invalid_token", provider_status="410",
                              reason="subscription gone"))
        s.add(Answer(environment="prod", subject_type="incident", subject_id=42, action="acknowledge",
                     person_id="chen", via="token", outcome="applied", at=now - timedelta(minutes=4)))
        s.add(Answer(environment="prod", subject_type="approval", subject_id=7, action="approve", person_id="chen",
                     via="api", outcome="refused", reason="chen requested it", at=now - timedelta(minutes=3)))
        return {"paged": str(paged), "older": str(older), "phone": phone.id, "browser": browser.id,
                "page": page.id, "info": info.id}


def test_people_show_gives_devices_notifications_with_outcomes_and_answers(clean: None) -> None:
    rows = given_chen()
    # when an operator asks by alias, in another case
    shown = herald("people", "show", "CHEN.W", "--json")
    # then the person, both devices (tokens cut short), both notifications newest first with what became of each
    # delivery, and both answers, newest first
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["person"] == {"id": "chen", "name": "Chen Wu", "email": "Chen@Example.com", "aliases": ["chen.w"],
                               "active": True, "timezone": "UTC", "quiet_hours": None, "opted_out_channels": [],
                               "teams": ["ops"]}
    assert [(d["id"], d["channel"], d["active"], d["deactivated_reason"], d["token"]) for d in found["devices"]] == [
        (rows["phone"], "fcm", True, None, "fcm-token-01…"),
        (rows["browser"], "webpush", False, "410 Gone", '{"endpoint":…')]
    assert [(n["id"], n["event_id"], n["status"], n["why"]) for n in found["notifications"]] == [
        (rows["page"], rows["paged"], "sent", "on call for ops"),
        (rows["info"], rows["older"], "failed", "owner of orders-api")]
    assert [(d["channel"], d["status"], d["last_outcome"], d["reason"]) for d in found["notifications"][1]["deliveries"]
            ] == [("webpush", "failed", "invalid_token", "subscription gone")]
    assert [(a["subject"], a["action"], a["outcome"], a["reason"]) for a in found["answers"]] == [
        ("approval:7", "approve", "refused", "chen requested it"), ("incident:42", "acknowledge", "applied", None)]
    # and the same as tables for a person, by email
    text = herald("people", "show", "chen@example.com", columns=200)
    assert text.returncode == 0, text.stderr
    for expected in ("Chen Wu", "teams=ops", "fcm-token-01…", "inactive (410 Gone)", rows["paged"],
                     f"webpush#{rows['browser']} failed (subscription gone)", "incident:42", "refused (chen "):
        assert expected in text.stdout, expected
    assert "fcm-token-0123456789abcdef" not in text.stdout
    # --limit keeps the newest
    newest = json.loads(herald("people", "show", "chen", "--limit", "1", "--json").stdout)
    assert [n["id"] for n in newest["notifications"]] == [rows["page"]] and len(newest["answers"]) == 1


def test_people_show_finds_a_removed_person_by_id_and_refuses_an_unknown_one(clean: None) -> None:
    given_chen()
    removed = herald("people", "show", "dana")
    assert removed.returncode == 0, removed.stderr
    assert "inactive: removed from the directory" in removed.stdout and "devices: none" in removed.stdout
    unknown = herald("people", "show", "nobody@example.com")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip() == ("herald: no person in the directory is 'nobody@example.com' "
                                      "(an id, email or alias)")


def given_audit_trail() -> None:
    now = utcnow()
    with db.session() as s:
        s.add_all([
            AuditLog(at=now - timedelta(days=3), actor="herald/sweep.due", action="incident.escalated",
                     subject_type="incident", subject_id="42", details={"level": 1}),
            AuditLog(at=now - timedelta(hours=1), actor="chen", action="incident.acknowledged",
                     subject_type="incident", subject_id="42", details={"status": "acknowledged"}),
            AuditLog(at=now - timedelta(minutes=30), actor="bruno", action="approval.approve.refused",
                     subject_type="approval", subject_id="7", details={"reason": "bruno requested it"}),
            AuditLog(at=now - timedelta(minutes=1), actor="cli", action="api_key.created",
                     subject_type="api_key", subject_id="k_1", details={"scope": "read"}),
        ])


def actions(*args: str) -> list[str]:
    done = herald("audit", "list", *args, "--json")
    assert done.returncode == 0, done.stderr
    return [entry["action"] for entry in json.loads(done.stdout)]


def test_audit_list_filters_by_subject_and_time_newest_first(clean: None) -> None:
    given_audit_trail()
    assert actions() == ["api_key.created", "approval.approve.refused", "incident.acknowledged",
                         "incident.escalated"]
    assert actions("--subject", "incident:42") == ["incident.acknowledged", "incident.escalated"]
    assert actions("--since", "2h") == ["api_key.created", "approval.approve.refused", "incident.acknowledged"]
    assert actions("--since", "45m", "--subject", "incident:42") == []
    since = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")  # naive: UTC
    assert actions("--since", since, "--limit", "2") == ["api_key.created", "approval.approve.refused"]
    entry = json.loads(herald("audit", "list", "--subject", "approval:7", "--json").stdout)[0]
    assert (entry["actor"], entry["subject"], entry["details"]) == ("bruno", "approval:7",
                                                                    {"reason": "bruno requested it"})
    table = herald("audit", "list", "--subject", "incident:42", columns=200)
    assert table.returncode == 0 and "incident.acknowledged" in table.stdout and '"level": 1' in table.stdout
    assert herald("audit", "list", "--subject", "incident:999").stdout.strip() == "no audit entries for incident:999"


@pytest.mark.parametrize(("args", "message"), [
    (["--subject", "incident"], "herald: --subject 'incident': give KIND:ID, for example incident:42"),
    (["--subject", ":42"], "herald: --subject ':42': give KIND:ID, for example incident:42"),
    (["--since", "yesterday"], "herald: --since 'yesterday': give a duration (90s, 15m, 2h, 7d, 1w) or an ISO date "
                               "or time (2026-12-01, 2026-12-01T08:00:00+01:00)"),
])
def test_audit_list_refuses_what_it_cannot_read(clean: None, args: list[str], message: str) -> None:
    done = herald("audit", "list", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == message


# --- progress bars: on a terminal only ------------------------------------------------------------------------------


ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(*args: str) -> tuple[int, str]:
    """Run a herald command with a pseudo-terminal as stdout and stderr; return its exit code and all it drew
    (its text, without the terminal's escape sequences)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower)
    os.close(follower)
    drawn = _read_all(leader)
    os.close(leader)
    return proc.wait(timeout=60), drawn


def _read_all(leader: int) -> str:
    """Everything written to a pseudo-terminal until its other end closes, without escape sequences."""
    drawn = b""
    while select.select([leader], [], [], 60)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other end closed (EIO on Linux): the process is done
            break
        if not chunk:
            break
        drawn += chunk
    return ESCAPES.sub("", drawn.decode(errors="replace"))


def test_directory_apply_draws_a_progress_bar_on_a_terminal_only(clean: None) -> None:
    sample = str(ROOT / "devtools" / "samples" / "directory.yaml")
    code, drawn = on_a_terminal("directory", "apply", sample)
    assert code == 0, drawn
    assert f"applying {sample}" in drawn and "applied" in drawn
    piped = herald("directory", "apply", sample)
    assert piped.returncode == 0 and "applying" not in piped.stdout + piped.stderr
    as_json = json.loads(herald("directory", "apply", sample, "--json").stdout)
    assert as_json["applied"]["people"] > 0


@pytest.mark.expect_dead_letters(r"^test: ")
def test_deadletters_replay_draws_a_progress_bar_on_a_terminal_and_replays_each(clean: None) -> None:
    with db.session() as s:
        event_ids = [uuid.uuid4() for _ in range(3)]
        letters = [DeadLetter(kind="task", task_name="herald.enrich", queue="enrich", ref={"args": [str(e)]},
                              reason=f"test: enrich {e}") for e in event_ids]
        malformed = DeadLetter(kind="message", reason="test: not a task message", body="garbage")
        s.add_all([*letters, malformed])
        s.flush()
        ids, malformed_id = [d.id for d in letters], malformed.id
    code, drawn = on_a_terminal("deadletters", "replay", str(ids[0]))
    assert code == 0, drawn
    assert "replaying 1 dead letter(s)" in drawn and f"replayed 1 dead letter(s): {ids[0]}" in drawn
    # piped and --json: no bar, the result only; the malformed message has nothing to replay
    done = herald("deadletters", "replay", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"replayed": ids[1:], "skipped": [malformed_id]}
    assert "replaying" not in done.stderr
    with db.session() as s:
        assert [s.get_one(DeadLetter, i).replay_count for i in ids] == [1, 1, 1]


def test_long_commands_draw_no_bar_when_stdout_is_a_file(clean: None, tmp_path: Path) -> None:
    # stderr a terminal, stdout a file (a script keeping the result): no bar either
    sample = str(ROOT / "devtools" / "samples" / "directory.yaml")
    leader, follower = pty.openpty()
    with open(tmp_path / "out.txt", "wb") as out:
        proc = subprocess.run([sys.executable, "-m", "cli", "directory", "apply", sample], cwd=ROOT,
                              env={**os.environ, "TERM": "xterm-256color"}, stdout=out, stderr=follower, timeout=60)
    os.close(follower)
    drawn = _read_all(leader)
    os.close(leader)
    assert proc.returncode == 0
    assert "applying" not in drawn and "applied" in (tmp_path / "out.txt").read_text()
