"""The credential expiry sweep: thresholds once each per version, rotation, unreadable files, two sweeps."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from herald import db, inventory
from herald.models import AuditLog, Credential, CredentialNotice, Incident, Notification, Outbox, Resource
from schedules.expiry import sweep_credentials
from tests.builders import (
    NOW,
    Env,
    env_override,
    fingerprint,
    make_cert,
    make_jwt,
    pem,
    write_pkcs12,
)
from tests.integration.conftest import ROOT, Workers, wait_until
from tests.integration.helpers import rows


@pytest.fixture
def env() -> Iterator[Env]:
    yield from env_override()


def notices() -> list[dict[str, Any]]:
    """What the sweeps published, oldest first (the outbox holds every envelope)."""
    with db.session() as s:
        return [o.envelope for o in s.scalars(select(Outbox).order_by(Outbox.created_at))]


def credential_notices(name: str | None = None) -> list[tuple[str, int | None, str]]:
    return [(e["type"], e["data"].get("threshold_days"), e["severity"]) for e in notices()
            if e["type"].startswith("credential.") and (name is None or e["data"]["credential"] == name)]


def import_path(path: Path, environment: str = "prod", owner: str | None = "team:security") -> None:
    with db.session() as s:
        inventory.add_source(s, path, environment=environment, owner=owner)


def test_thresholds_crossed_over_simulated_days_notify_exactly_once_each(clean: None, tmp_path: Path) -> None:
    # given a certificate expiring in 31.5 days
    cert, _ = make_cert("erp.example.com", 31.5)
    (tmp_path / "erp.pem").write_bytes(pem(cert))
    import_path(tmp_path / "erp.pem")
    # when the sweep runs twice a day, every day, until two days after expiry
    for day in range(34):
        for hour in (0, 12):
            sweep_credentials(NOW + timedelta(days=day, hours=hour))
            sweep_credentials(NOW + timedelta(days=day, hours=hour))
    # then each threshold was notified exactly once, expiry last, with severity rising
    assert credential_notices() == [
        ("credential.expiring", 30, "info"), ("credential.expiring", 14, "warning"),
        ("credential.expiring", 7, "warning"), ("credential.expiring", 3, "error"),
        ("credential.expiring", 1, "critical"), ("credential.expired", 0, "critical")]
    assert len(rows(select(CredentialNotice.id))) == 6


def test_a_folder_of_every_kind_notifies_the_right_thresholds_and_reports_the_corrupt_file(
        clean: None, tmp_path: Path, env: Env) -> None:
    # given a folder: expired, 1 day, 10 days, 100 days, a chain whose intermediate expires in 5 days,
    # a DER certificate (20 days), a PKCS#12 (2 days), a JWT (3 days) and a corrupt file
    env["HERALD_CREDENTIAL_PKCS12_PASSWORD"] = "changeit"
    files = {"expired.pem": -1, "one-day.pem": 0.5, "ten-days.pem": 10, "hundred-days.pem": 100}
    for name, days in files.items():
        (tmp_path / name).write_bytes(pem(make_cert(name, days)[0]))
    root = make_cert("Root", 900, ca=True)
    inter = make_cert("Intermediate", 5, issuer=root, ca=True)
    (tmp_path / "chain.pem").write_bytes(pem(make_cert("leaf", 300, issuer=inter)[0], inter[0], root[0]))
    (tmp_path / "partner.der").write_bytes(make_cert("partner", 20)[0].public_bytes(serialization.Encoding.DER))
    p12, p12_key = make_cert("b2b", 2)
    write_pkcs12(tmp_path / "b2b.p12", p12, p12_key, b"changeit")
    (tmp_path / "svc.jwt").write_text(make_jwt(2.5))
    (tmp_path / "corrupt.crt").write_bytes(b"\x30\x82 definitely not DER")
    import_path(tmp_path)
    # when the sweep runs, and again
    first = sweep_credentials()
    second = sweep_credentials()
    # then each credential got the threshold it is in, once
    assert first is not None and second is not None
    got = {e["data"]["credential"]: (e["type"], e["data"]["threshold_days"]) for e in notices()
           if e["type"].startswith("credential.")}
    assert got == {"expired": ("credential.expired", 0), "one-day": ("credential.expiring", 1),
                   "ten-days": ("credential.expiring", 14), "chain": ("credential.expiring", 7),
                   "partner": ("credential.expiring", 30), "b2b": ("credential.expiring", 3),
                   "svc": ("credential.expiring", 3)}
    assert second["notified"] == {} and second["unreadable_notified"] == 0
    # and the chain's version is its intermediate's fingerprint
    chain = [e for e in notices() if e["data"].get("credential") == "chain"][0]
    assert chain["data"]["fingerprint"] == fingerprint(inter[0])
    # and the corrupt file raised one operations notification naming it, and the sweep went on
    broken = [e for e in notices() if e["type"].startswith("ops.")]
    assert len(broken) == 1
    assert broken[0]["data"]["file"] == str(tmp_path / "corrupt.crt")
    assert "corrupt.crt" in broken[0]["subject"] and broken[0]["data"]["reason"]
    # and the expired certificate opened an incident, named in its event
    incident = rows(select(Incident.id, Incident.dedup_key, Incident.status))
    assert [(i.dedup_key, i.status) for i in incident] == [("credential:prod:expired", "open")]
    expired = [e for e in notices() if e["type"] == "credential.expired"][0]
    assert expired["data"]["incident_id"] == incident[0].id


def test_rotation_starts_the_thresholds_over_and_resolves_the_expiry_incident(clean: None, tmp_path: Path) -> None:
    # given an expired certificate and one 10 days from expiry, both notified
    (tmp_path / "gw.pem").write_bytes(pem(make_cert("gw", -3)[0]))
    (tmp_path / "api.pem").write_bytes(pem(make_cert("api", 10)[0]))
    import_path(tmp_path)
    sweep_credentials()
    assert len(credential_notices()) == 2
    # when both are rotated: the expired one for a long-lived one, the other for one in 12 days
    new_gw, _ = make_cert("gw", 365)
    (tmp_path / "gw.pem").write_bytes(pem(new_gw))
    new_api, _ = make_cert("api", 12)
    (tmp_path / "api.pem").write_bytes(pem(new_api))
    sweep_credentials()
    # then the new version of api is notified at 14 days again, gw's incident is resolved
    assert credential_notices("api") == [("credential.expiring", 14, "warning")] * 2
    assert credential_notices("gw") == [("credential.expired", 0, "critical")]
    assert rows(select(Incident.status)) == [("resolved",)]
    assert rows(select(AuditLog.details["reason"].as_string()).where(AuditLog.action == "incident.resolved")) \
        == [("credential rotated",)]
    with db.session() as s:
        api = s.scalar(select(Credential).where(Credential.name == "api"))
        assert api is not None and api.fingerprint == fingerprint(new_api)


def test_an_unreadable_file_is_reported_once_until_it_changes(clean: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    import_path(tmp_path)
    sweep_credentials()
    sweep_credentials()
    assert len([e for e in notices() if e["type"].startswith("ops.")]) == 1
    bad.write_text("-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")  # broken differently
    sweep_credentials()
    assert len([e for e in notices() if e["type"].startswith("ops.")]) == 2
    bad.write_bytes(pem(make_cert("fixed", 200)[0]))  # repaired: no error left
    sweep_credentials()
    with db.session() as s:
        assert s.scalar(select(Credential.error).where(Credential.name == "bad")) is None


def test_concurrent_sweeps_in_separate_processes_produce_one_set_of_notifications(clean: None,
                                                                                  tmp_path: Path) -> None:
    # given five certificates inside their thresholds
    for i in range(5):
        (tmp_path / f"c{i}.pem").write_bytes(pem(make_cert(f"c{i}", 2 + i)[0]))
    import_path(tmp_path)
    # when four processes sweep at the same moment
    code = "from schedules.expiry import sweep_credentials; print(sweep_credentials())"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE) for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # then the five are notified once in all (the runs either skipped or found the ledger full)
    assert len(credential_notices()) == 5, outputs
    assert len(rows(select(CredentialNotice.id))) == 5


def test_declared_api_keys_from_the_cli_api_and_the_directory(clean: None) -> None:
    # given an API key declared in code, a client secret declared twice (a rotation), and a directory entry
    with db.session() as s:
        inventory.declare(s, name="partner-key", kind="api_key", expires_at=NOW + timedelta(days=6),
                            environment="prod", owner="person:chen")
        s.add(Resource(kind="credential", name="erp-secret", environment="test", owners=["team:security"],
                       meta={"credential_kind": "client_secret",
                             "expires_at": (NOW + timedelta(days=2)).isoformat()}))
    sweep_credentials()
    with db.session() as s:  # the key is replaced by a new one with a later date: a new version
        inventory.declare(s, name="partner-key", kind="api_key", expires_at=NOW + timedelta(days=13),
                            environment="prod", owner="person:chen")
    sweep_credentials()
    # then each version is notified at its threshold, and the directory entry too
    assert credential_notices("partner-key") == [("credential.expiring", 7, "warning"),
                                                 ("credential.expiring", 14, "warning")]
    assert credential_notices("erp-secret") == [("credential.expiring", 3, "error")]
    # and the inventory owner travels with the event (enrich routes it to chen), nothing added to the directory
    assert {e["data"]["owner"] for e in notices() if e["data"].get("credential") == "partner-key"} == {"person:chen"}
    assert rows(select(Resource.owners).where(Resource.name == "partner-key")) == []


def test_owners_get_exactly_one_notification_per_threshold_end_to_end(sample_directory: None, workers: Workers,
                                                                      tmp_path: Path) -> None:
    # given the directory's erp-client-cert (owned by team security: alice) expiring tomorrow,
    # and an API key owned by chen, with the whole pipeline running
    (tmp_path / "erp-client-cert.pem").write_bytes(pem(make_cert("erp", 0.8)[0]))
    import_path(tmp_path, owner=None)
    with db.session() as s:
        inventory.declare(s, name="portal-key", kind="api_key", expires_at=NOW + timedelta(days=25),
                            environment="prod", owner="person:chen")
    workers.start("all")
    # when the sweep runs three times
    for _ in range(3):
        sweep_credentials()

    def delivered() -> list[tuple[str, str]]:
        return sorted((r.person_id, r.credential) for r in rows(
            select(Notification.person_id, Outbox.envelope["data"]["credential"].as_string().label("credential"))
            .join(Outbox, Outbox.id == Notification.event_id)))

    # then alice hears about the certificate and chen about the key, once each
    wait_until(lambda: delivered() == [("alice", "erp-client-cert"), ("chen", "portal-key")], timeout_s=90,
               message="owner notifications")


def test_the_producer_library_declares_credentials(clean: None) -> None:
    from producers import declare_credential

    # given an API key declared from integration code, expiring in two days
    declare_credential("billing-key", kind="api_key", expires_at=datetime.now(UTC) + timedelta(days=2, hours=1),
                       environment="test", owner="team:security")
    # when the sweep runs twice, then its owner hears once, at the 3-day threshold
    sweep_credentials()
    sweep_credentials()
    assert credential_notices("billing-key") == [("credential.expiring", 3, "error")]
    with pytest.raises(inventory.CredentialError):
        declare_credential("bad", kind="api_key", expires_at=datetime.now(UTC), environment="test", owner="nobody")
