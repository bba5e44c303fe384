"""``herald demo`` on the embedded default sends through the real channels to the local fakes."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.integration.test_embedded import embedded_env, herald


def test_demo_messages_reach_the_fakes_and_web_push_is_decrypted(tmp_path: Path) -> None:
    # given no services at all, when the demo runs on its default (the fakes), as a person reads it
    done = herald(embedded_env(tmp_path), "demo", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pending targets: 0" in done.stdout
    seen = json.loads((tmp_path / "demo-fakes.json").read_text())
    engine = create_engine(f"sqlite:///{tmp_path / 'herald.sqlite'}")
    with engine.connect() as c:
        sent: dict[str, int] = dict(c.execute(text("SELECT d.channel, count(*) FROM deliveries x JOIN devices d "
                                   "ON d.id = x.device_id WHERE x.status = 'sent' GROUP BY d.channel")).all())
        failed_count = c.execute(text("SELECT count(*) FROM deliveries WHERE status = 'failed'")).scalar()
        dead = c.execute(text("SELECT token, active, deactivated_reason FROM devices "
                              "WHERE token LIKE 'dead-%'")).all()
        retried = c.execute(text("SELECT count(*) FROM delivery_attempts a JOIN deliveries x ON x.id = a.delivery_id "
                                 "JOIN devices d ON d.id = x.device_id WHERE d.token LIKE 'flaky-%' "
                                 "AND a.outcome = 'transient'")).scalar()
    # then every delivery herald recorded as sent was accepted by its fake, through its protocol
    accepted = {name: [e for e in entries if e["status"] in (200, 201, 250)] for name, entries in seen.items()}
    assert {name: len(entries) for name, entries in accepted.items()} == {
        "fcm": sent["fcm"], "apns": sent["apns"], "webpush": sent["webpush"], "email": sent["email"]}
    # and ines, who owns invoices-to-bank and has no device, was not reached by its page: e-mailed instead
    assert [e["to"] for e in accepted["email"]] == [["ines@example.com"]]
    assert all(e["validate_only"] is False and e["notification"]["title"] for e in accepted["fcm"])
    assert all(e["alert"]["title"] and e["topic"] == "com.example.admin" and e["push_type"] == "alert"
               for e in accepted["apns"])
    assert {e["environment"] for e in accepted["apns"]} == {"sandbox", "production"}
    # and the Web Push fake decrypted every message with the subscriber's keys (RFC 8291)
    for entry in accepted["webpush"]:
        clear = json.loads(entry["text"])
        assert clear["title"] and clear["link"].startswith("herald://events/") and clear["data"]["event_id"]
        assert int(entry["ttl"]) > 0
    # and the sample's dead token was refused by FCM as unregistered, then deactivated
    assert [e["reason"] for e in seen["fcm"] if e["token"] == "dead-fcm-bruno-old-tablet"][:1] == ["UNREGISTERED"]
    assert dead == [("dead-fcm-bruno-old-tablet", 0, "provider: invalid token")]
    # and the flaky token failed once at the provider, then its retry was accepted
    flaky = [e["status"] for e in seen["fcm"] if e["token"] == "flaky-fcm-chen"]
    assert flaky[0] == 500 and 200 in flaky and retried == 1
    # and the summary says that these failures are deliberate, and which tokens the fakes refuse on purpose
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith("failed deliveries:")]
    assert failed == [f"failed deliveries: {failed_count} on purpose, 0 unexpected. The fakes were told to "
                      "misbehave for these sample tokens, to show what herald does:"]
    assert ("  fcm token dead-fcm-bruno-old-tablet (bruno): unregistered (FCM 404 UNREGISTERED): its deliveries "
            "fail and herald deactivates the device") in lines
    assert ("  fcm token flaky-fcm-chen (chen): one transient error (FCM 500 INTERNAL): herald retries it, and the "
            "retry is sent") in lines
    assert any(line.startswith("fake fcm received") and line.endswith("(the errors are the deliberate faults above)")
               for line in lines)
    # and it shows the answers written back: the paged person's acknowledgement, the approval, the refusal
    assert "unreached page: flow.credential_error for ines, on no device: e-mail sent" in lines
    assert_written_back(lines, tmp_path)


def assert_written_back(lines: list[str], data_dir: Path) -> None:
    """The summary's write-back lines match what the database holds."""
    engine = create_engine(f"sqlite:///{data_dir / 'herald.sqlite'}")
    with engine.connect() as c:
        incidents = c.execute(text("SELECT id, title, status, assignee FROM incidents ORDER BY id")).all()
        approval = c.execute(text("SELECT id, status FROM approvals")).one()
        votes = c.execute(text("SELECT person_id, decision FROM approval_votes")).all()
        acked = c.execute(text("SELECT actor FROM audit_log WHERE action = 'incident.acknowledged'")).scalar()
    by_title = {title: (ident, status, assignee) for ident, title, status, assignee in incidents}
    ident, status, assignee = by_title["invoices-to-bank: flow.credential_error"]
    assert status == "acknowledged" and assignee == acked and assignee in ("chen", "bruno")
    assert by_title["orders-to-erp: flow.failed"][1] == "resolved"  # its flow.recovered closed it
    assert approval[1] == "approved" and votes == [("alice", "approve")]
    start = lines.index("answers written back (flow 7):")
    assert (f"  incident {ident} invoices-to-bank: flow.credential_error: acknowledged, assignee {assignee}, "
            "escalation stopped") in lines[start:]
    assert (f"  approval {approval[0]} api orders-api (requested by bruno, quorum 1): approved (alice approve)"
            in lines[start:])
    assert ("  refused on purpose: response.approved from bruno: the requester cannot answer their own approval"
            in lines[start:])
    [hooks] = [line for line in lines[start:] if line.startswith("signed webhooks")]
    assert hooks.endswith(f"incident.acknowledged (incident:{ident}), approval.approved (approval:{approval[0]})")


def test_demo_dev_channel_writes_json_lines_and_starts_no_fakes(tmp_path: Path) -> None:
    done = herald(embedded_env(tmp_path), "demo", "--json", "--dev-channel", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert set(result) == {"flows", "pending", "failed", "deliberate_faults", "written_back", "webhooks"}
    assert result["pending"] == 0
    # the development channel plays the sample's token prefixes too: its failures are the deliberate ones
    assert [(f["token"], f["fault"]) for f in result["deliberate_faults"]] == [
        ("dead-fcm-bruno-old-tablet", "unregistered (the development channel's dead- prefix)"),
        ("flaky-fcm-chen", "one transient error (the development channel's flaky- prefix)")]
    assert result["failed"]["deliberate"] >= 1 and result["failed"]["unexpected"] == 0
    # and the answers are written back
    back = result["written_back"]
    assert [(i["title"], i["status"]) for i in back["incidents"]] == [
        ("orders-to-erp: flow.failed", "resolved"), ("invoices-to-bank: flow.credential_error", "acknowledged")]
    assert back["approval"]["status"] == "approved" and back["approval"]["votes"] == [
        {"person": "alice", "decision": "approve"}]
    assert back["refused"] == [{"type": "response.approved", "responder": "bruno",
                                "reason": "the requester cannot answer their own approval"}]
    # and the admin platform's receiver verified the signed write-back of both answers, and refused none
    hooks = result["webhooks"]
    assert [h["kind"] for h in hooks["verified"]] == ["incident.acknowledged", "approval.approved"]
    assert hooks["missing"] == [] and hooks["refused"] == 0
    received = [json.loads(line) for line in Path(hooks["log"]).read_text().splitlines()]
    assert [(r["path"], r["answered"], r["error"]) for r in received] == [("/webhooks/prod", 204, None)] * 2
    lines = (tmp_path / "dev-channel.jsonl").read_text().splitlines()
    assert len(lines) >= sum(sum(r["deliveries"].values()) for r in result["flows"].values())
    assert not (tmp_path / "demo-fakes.json").exists()
    # and a second run in the same data folder answers again (the first run's open incident is closed
    # first: its new failure would otherwise join it, and nobody would be paged to answer)
    again = herald(embedded_env(tmp_path), "demo", "--json", "--dev-channel", timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = json.loads(again.stdout)
    assert [i["status"] for i in rerun["written_back"]["incidents"]] == ["resolved", "acknowledged"]
    assert rerun["webhooks"]["missing"] == []
