"""``herald demo`` on the embedded default sends through the real channels to the local fakes."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.test_embedded import embedded_env, herald


def test_demo_messages_reach_the_fakes_and_web_push_is_decrypted(tmp_path: Path) -> None:
    # given no services at all, when the demo runs on its default (the fakes)
    done = herald(embedded_env(tmp_path), "demo", "--json", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["pending"] == 0
    seen = json.loads((tmp_path / "demo-fakes.json").read_text())
    engine = create_engine(f"sqlite:///{tmp_path / 'herald.sqlite'}")
    with engine.connect() as c:
        sent = dict(c.execute(text("SELECT d.channel, count(*) FROM deliveries x JOIN devices d "
                                   "ON d.id = x.device_id WHERE x.status = 'sent' GROUP BY d.channel")).all())
        dead = c.execute(text("SELECT token, active, deactivated_reason FROM devices "
                              "WHERE token LIKE 'dead-%'")).all()
        retried = c.execute(text("SELECT count(*) FROM delivery_attempts a JOIN deliveries x ON x.id = a.delivery_id "
                                 "JOIN devices d ON d.id = x.device_id WHERE d.token LIKE 'flaky-%' "
                                 "AND a.outcome = 'transient'")).scalar()
    # then every delivery herald recorded as sent was accepted by its fake, through its protocol
    accepted = {name: [e for e in entries if e["status"] in (200, 201)] for name, entries in seen.items()}
    assert {name: len(entries) for name, entries in accepted.items()} == {
        "fcm": sent["fcm"], "apns": sent["apns"], "webpush": sent["webpush"]}
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


def test_demo_dev_channel_writes_json_lines_and_starts_no_fakes(tmp_path: Path) -> None:
    done = herald(embedded_env(tmp_path), "demo", "--json", "--dev-channel", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert set(result) == {"flows", "pending"} and result["pending"] == 0
    lines = (tmp_path / "dev-channel.jsonl").read_text().splitlines()
    assert len(lines) >= sum(sum(r["deliveries"].values()) for r in result["flows"].values())
    assert not (tmp_path / "demo-fakes.json").exists()
