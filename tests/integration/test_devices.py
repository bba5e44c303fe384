"""Device registration: every door checks addresses the same way; the directory never revives a device.

The doors are ``producers.register_device``, ``herald devices register`` and the directory file.
Each bad address below was accepted before herald/devices.py existed (issue 7).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from cli.main import app as cli
from devtools.fakes.testing import herald_env
from herald import db, directory
from herald.errors import DirectoryError, InvalidDevice
from herald.models import Device
from producers import register_device
from tests.integration.conftest import DATA_DIR
from tests.integration.helpers import rows

IPHONE = "8f1c" * 16  # 64 hex digits, as APNs hands them to an app
FID = "cXk9Zm9yX2ZpZF90ZXN0MQ"  # 22 characters, first c..f


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser_keys() -> dict[str, str]:
    """keys.p256dh and keys.auth as a browser's PushSubscription has them."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}


KEYS = browser_keys()


def sub(endpoint: str, keys: dict[str, str] | None = None) -> str:
    return json.dumps({"endpoint": endpoint, "keys": KEYS if keys is None else keys})


def device_count() -> int:
    return rows(select(func.count()).select_from(Device))[0][0]  # type: ignore[no-any-return]


# channel, token, extra arguments, what the refusal says
BAD: list[tuple[str, Any, dict[str, str], str]] = [
    ("fcm", "", {}, "FCM registration token"),
    ("fcm", "x" * 100_000, {}, "FCM registration token"),
    ("fcm", "tok en\n", {}, "FCM registration token"),
    ("fcm", "not-a-fid", {"token_kind": "fid"}, "installation id"),
    ("fcm", "abc", {"token_kind": "subscription"}, "token or fid"),
    ("apns", "../../3/device/x?foo=1", {"app": "com.example.admin"}, "hexadecimal"),
    ("apns", "abc123", {"app": "com.example.admin"}, "hexadecimal"),
    ("apns", IPHONE, {}, "topic is known"),  # no app: apns-topic "default" fails on every event
    ("apns", IPHONE, {"app": "admin"}, "topic is known"),
    ("apns", IPHONE, {"app": "com.example.admin", "environment": "staging"}, "environment"),
    ("webpush", sub("http://169.254.169.254/latest/meta-data"), {}, "https"),
    ("webpush", sub("https://169.254.169.254/latest/meta-data"), {}, "not public"),
    ("webpush", sub("http://localhost:6379/"), {}, "loopback"),
    ("webpush", sub("https://127.0.0.1:6379/"), {}, "loopback"),
    ("webpush", sub("https://[::1]/x"), {}, "loopback"),
    ("webpush", sub("https://[::ffff:10.0.0.1]/x"), {}, "not public"),
    ("webpush", sub("https://10.0.0.8/push"), {}, "not public"),
    ("webpush", sub("https://192.168.1.1/push"), {}, "not public"),
    ("webpush", sub("https://0.0.0.0/push"), {}, "not public"),
    ("webpush", sub("https://239.1.2.3/push"), {}, "not public"),
    ("webpush", sub("https://2130706433/push"), {}, "not a domain name"),  # 127.0.0.1 as one number
    ("webpush", sub("https://0x7f.0.0.1/push"), {}, "not a domain name"),
    ("webpush", sub("file:///etc/passwd"), {}, "https"),
    ("webpush", sub("gopher://push.example.com/x"), {}, "https"),
    ("webpush", sub("https://user:pw@push.example.com/x"), {}, "user name"),
    ("webpush", json.dumps({"endpoint": "https://push.example.com/x"}), {}, "keys"),
    ("webpush", sub("https://push.example.com/x", {"p256dh": "BNcR-alice", "auth": KEYS["auth"]}), {}, "P-256"),
    ("webpush", sub("https://push.example.com/x", {"p256dh": KEYS["p256dh"], "auth": b64url(b"short")}), {},
     "16 bytes"),
    ("webpush", "not json", {}, "JSON"),
    ("sms", "+33600000000", {}, "unknown channel"),
]


@pytest.mark.parametrize(("channel", "token", "extra", "says"), BAD, ids=[f"{c}-{i}" for i, (c, *_) in enumerate(BAD)])
def test_the_producer_refuses_a_bad_address_with_a_typed_error_and_writes_nothing(
        sample_directory: None, channel: str, token: Any, extra: dict[str, str], says: str) -> None:
    before = device_count()
    with pytest.raises(InvalidDevice, match=says):
        register_device("alice", channel, token, **extra)  # type: ignore[arg-type]
    assert device_count() == before


@pytest.mark.parametrize(("channel", "token", "extra", "says"), [b for b in BAD if "\n" not in str(b[1])][::3],
                         ids=lambda v: None)
def test_the_cli_refuses_a_bad_address_with_exit_2_and_one_line(
        sample_directory: None, channel: str, token: Any, extra: dict[str, str], says: str) -> None:
    argv = ["devices", "register", "alice", channel, token]
    for key, value in extra.items():
        argv += [f"--{'kind' if key == 'token_kind' else key}", value]
    before = device_count()
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("herald: ") and says in line
    assert device_count() == before


def test_the_directory_file_refuses_bad_devices_with_their_lines(clean: None, tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump({"people": [{"id": "ana", "name": "Ana", "devices": [
        {"channel": "apns", "token": "../../3/device/x?foo=1", "app": "com.example.admin"},
        {"channel": "apns", "token": IPHONE},
        {"channel": "webpush", "subscription": {"endpoint": "http://localhost:6379/", "keys": KEYS}},
        {"channel": "webpush", "subscription": {"endpoint": "https://push.example.com/x", "keys": {}}},
        {"channel": "fcm", "token": ""},
    ]}]}, sort_keys=False))
    with pytest.raises(DirectoryError) as caught:
        directory.load(path)
    problems = caught.value.problems
    assert len(problems) == 5, problems
    assert "hexadecimal" in problems[0] and "topic is known" in problems[1] and "loopback" in problems[2]
    assert "needs keys.p256dh" in problems[3] and "FCM registration token" in problems[4]
    assert all(p.startswith(f"{path}:") for p in problems)


def test_good_addresses_are_stored_in_one_form_whatever_the_door(sample_directory: None) -> None:
    # given a browser subscription written two ways (the CLI's JSON and a mapping with expirationTime)
    endpoint = "https://fcm.googleapis.com/fcm/send/abc:def"
    first = register_device("alice", "webpush", json.dumps({"endpoint": endpoint, "keys": KEYS}, indent=2))
    again = CliRunner().invoke(cli, ["devices", "register", "emil", "webpush",
                                     json.dumps({"keys": KEYS, "expirationTime": None, "endpoint": endpoint})])
    # then both are the same device, moved to emil
    assert again.exit_code == 0, again.output
    assert int(again.output.split()[-1]) == first
    # and an APNs token is stored lower-case, FCM FIDs and tokens as given
    apns = register_device("bruno", "apns", IPHONE.upper(), app="com.example.admin", environment="sandbox")
    fid = register_device("chen", "fcm", FID, token_kind="fid")
    token = register_device("chen", "fcm", "dXNlcl90b2tlbg:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx")
    stored = dict(rows(select(Device.id, Device.token).where(Device.id.in_([first, apns, fid, token]))))
    assert json.loads(stored[first]) == {"endpoint": endpoint, "keys": KEYS}
    assert stored[apns] == IPHONE and stored[fid] == FID


def test_an_apns_app_is_a_bundle_id_or_one_the_topics_setting_maps(sample_directory: None) -> None:
    with pytest.raises(InvalidDevice, match="topic is known"):
        register_device("bruno", "apns", IPHONE, app="admin")
    with herald_env({"HERALD_APNS_TOPICS": json.dumps({"admin": "com.example.admin"})}):
        device_id = register_device("bruno", "apns", IPHONE, app="admin")
    assert rows(select(Device.app).where(Device.id == device_id)) == [("admin",)]


def test_an_unknown_person_is_a_typed_error(sample_directory: None) -> None:
    with pytest.raises(InvalidDevice, match="unknown person 'nobody'"):
        register_device("nobody", "fcm", "some-token")
    result = CliRunner().invoke(cli, ["devices", "register", "nobody", "fcm", "some-token"])
    assert result.exit_code == 2 and "unknown person" in result.output


def test_loopback_endpoints_only_with_the_setting_for_local_fakes(sample_directory: None) -> None:
    local = sub("http://127.0.0.1:8804/push/abc")
    with pytest.raises(InvalidDevice, match="loopback"):
        register_device("alice", "webpush", local)
    with herald_env({"HERALD_WEBPUSH_ALLOW_LOOPBACK": "true"}):
        assert register_device("alice", "webpush", local)
        # private and link-local addresses stay refused: the setting is about this machine only
        with pytest.raises(InvalidDevice, match="not public"):
            register_device("alice", "webpush", sub("https://169.254.169.254/"))


def test_devices_register_list_remove(sample_directory: None) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["devices", "register", "alice", "apns", IPHONE, "--environment", "sandbox",
                                "--app", "com.example.admin"])
    assert added.exit_code == 0, added.output
    device_id = int(added.output.split()[-1])
    moved = runner.invoke(cli, ["devices", "register", "bruno", "apns", IPHONE, "--environment", "sandbox",
                                "--app", "com.example.admin"])
    assert int(moved.output.split()[-1]) == device_id  # the same token moves to bruno: duplicates collapse
    listed = json.loads(runner.invoke(cli, ["devices", "list", "--person", "bruno", "--json"]).output)
    assert [d["token"] for d in listed if d["channel"] == "apns"].count(IPHONE) == 1
    assert runner.invoke(cli, ["devices", "remove", str(device_id)]).exit_code == 0
    listed = json.loads(runner.invoke(cli, ["devices", "list", "--all", "--json"]).output)
    assert [d["deactivated_reason"] for d in listed if d["id"] == device_id] == ["removed (CLI)"]


# --- the directory and the device's own registration -------------------------------------------


def apply_file(spec: dict[str, Any]) -> None:
    path = DATA_DIR / "devices-directory.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with db.session() as s:
        directory.apply(directory.load(path), s)


def device_rows() -> dict[str, Any]:
    return {r.token: r for r in rows(select(Device.token, Device.active, Device.registered_at,
                                            Device.device_registered_at, Device.deactivated_reason))}


PEOPLE = {"people": [{"id": "ana", "name": "Ana", "devices": [
    {"channel": "apns", "token": IPHONE, "app": "com.example.admin"},
    {"channel": "fcm", "token": "ana-pixel-token"}]}]}


def test_applying_an_unchanged_file_never_revives_a_pruned_device_nor_touches_registered_at(clean: None) -> None:
    # given a directory applied once, then APNs pruning the iPhone (410) some time later
    apply_file(PEOPLE)
    with db.session() as s:
        s.execute(update(Device).where(Device.token == IPHONE).values(
            active=False, deactivated_at=datetime.now(UTC), deactivated_reason="provider: invalid token"))
    before = device_rows()
    # when the same file is applied again
    apply_file(PEOPLE)
    after = device_rows()
    # then the pruned device stays inactive, and no device's registration time moved
    assert after[IPHONE].active is False and after[IPHONE].deactivated_reason == "provider: invalid token"
    assert after["ana-pixel-token"].active is True
    assert {t: r.registered_at for t, r in after.items()} == {t: r.registered_at for t, r in before.items()}
    assert after[IPHONE].device_registered_at is None  # the file is not the device registering itself


def test_the_device_registering_itself_again_revives_it_and_stamps_its_own_time(clean: None) -> None:
    apply_file(PEOPLE)
    with db.session() as s:
        s.execute(update(Device).where(Device.token == IPHONE).values(
            active=False, deactivated_at=datetime.now(UTC), deactivated_reason="provider: invalid token"))
    started = datetime.now(UTC) - timedelta(seconds=1)
    # when the app registers its token again (producer door)
    register_device("ana", "apns", IPHONE, app="com.example.admin")
    again = device_rows()[IPHONE]
    assert again.active is True and again.deactivated_reason is None
    assert again.device_registered_at is not None and again.device_registered_at >= started
    # and applying the file afterwards keeps that time (it is the device's, not the directory's)
    apply_file(PEOPLE)
    assert device_rows()[IPHONE].device_registered_at == again.device_registered_at


def test_a_person_back_in_the_file_gets_the_devices_the_directory_took_but_not_pruned_ones(clean: None) -> None:
    other = {"id": "ben", "name": "Ben"}
    apply_file({"people": [*PEOPLE["people"], other]})
    with db.session() as s:
        s.execute(update(Device).where(Device.token == IPHONE).values(
            active=False, deactivated_at=datetime.now(UTC), deactivated_reason="provider: invalid token"))
    apply_file({"people": [other]})  # ana leaves: her devices are deactivated with her
    assert {t: r.active for t, r in device_rows().items()} == {IPHONE: False, "ana-pixel-token": False}
    apply_file({"people": [*PEOPLE["people"], other]})  # ana is back
    back = device_rows()
    assert back["ana-pixel-token"].active is True
    assert back[IPHONE].active is False and back[IPHONE].deactivated_reason == "provider: invalid token"


def test_a_changed_device_in_the_file_is_updated_and_its_registration_time_moves(clean: None) -> None:
    apply_file(PEOPLE)
    before = device_rows()[IPHONE].registered_at
    changed = {"people": [{"id": "ana", "name": "Ana", "devices": [
        {"channel": "apns", "token": IPHONE, "app": "com.example.portal"}]}]}
    apply_file(changed)
    row = rows(select(Device.app, Device.registered_at).where(Device.token == IPHONE))[0]
    assert row.app == "com.example.portal" and row.registered_at > before
