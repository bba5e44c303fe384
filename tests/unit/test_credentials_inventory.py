"""Reading the credential inventory: PEM, DER, bundles, PKCS#12, JWTs, declared entries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from herald import inventory
from herald.inventory import CredentialError, Found, Unreadable
from tests.builders import (
    ALIAS_BOMB,
    NOW,
    SECRET,
    Env,
    env_override,
    fingerprint,
    make_cert,
    make_jwt,
    pem,
    write_pkcs12,
)


@pytest.fixture
def env() -> Iterator[Env]:
    yield from env_override()


# --- certificates ---------------------------------------------------------------------------


def test_single_pem_gives_expiry_subject_issuer_sans_and_fingerprint(tmp_path: Path) -> None:
    # given a PEM certificate expiring in 10 days
    cert, _ = make_cert("erp.example.com", 10, sans=["erp.example.com", "erp-backup.example.com"])
    path = tmp_path / "erp-client-cert.pem"
    path.write_bytes(pem(cert))
    # when it is read
    found = inventory.read_file(path)
    # then everything comes from the certificate itself
    assert found.name == "erp-client-cert" and found.kind == "certificate"
    assert found.expires_at == cert.not_valid_after_utc
    assert found.subject == "CN=erp.example.com" and found.issuer == "CN=erp.example.com"
    assert found.details["sans"] == ["erp.example.com", "erp-backup.example.com"]
    assert found.fingerprint == fingerprint(cert)


def test_der_certificate(tmp_path: Path) -> None:
    cert, _ = make_cert("partner-gw", 100)
    path = tmp_path / "partner.der"
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    found = inventory.read_file(path)
    assert (found.expires_at, found.fingerprint) == (cert.not_valid_after_utc, fingerprint(cert))


def test_chain_whose_intermediate_expires_first_counts_the_earliest(tmp_path: Path) -> None:
    # given a PEM bundle: leaf (200 days), intermediate (5 days), root (1000 days)
    root = make_cert("Root CA", 1000, ca=True)
    inter = make_cert("Intermediate CA", 5, issuer=root, ca=True)
    leaf, _ = make_cert("api.example.com", 200, issuer=inter)
    path = tmp_path / "api-chain.pem"
    path.write_bytes(pem(leaf, inter[0], root[0]))
    found = inventory.read_file(path)
    # then the leaf describes it, the intermediate's date counts, and its fingerprint is the version
    assert found.subject == "CN=api.example.com" and found.issuer == "CN=Intermediate CA"
    assert found.expires_at == inter[0].not_valid_after_utc
    assert found.fingerprint == fingerprint(inter[0])
    assert found.details["expires_first"] == "CN=Intermediate CA"
    assert len(found.details["chain"]) == 3


def test_pkcs12_reads_with_the_password_from_the_environment(tmp_path: Path, env: dict[str, str]) -> None:
    cert, key = make_cert("b2b-signing", 20)
    path = tmp_path / "b2b.p12"
    write_pkcs12(path, cert, key, b"s3cret")
    env["HERALD_CREDENTIAL_PKCS12_PASSWORD"] = "s3cret"
    found = inventory.read_file(path)
    assert (found.expires_at, found.fingerprint) == (cert.not_valid_after_utc, fingerprint(cert))


def test_pkcs12_with_a_wrong_password_is_unreadable_with_a_clear_reason(tmp_path: Path,
                                                                       env: dict[str, str]) -> None:
    cert, key = make_cert("b2b-signing", 20)
    path = tmp_path / "b2b.pfx"
    write_pkcs12(path, cert, key, b"s3cret")
    env["HERALD_CREDENTIAL_PKCS12_PASSWORD"] = "wrong"
    with pytest.raises(CredentialError) as caught:
        inventory.read_file(path)
    assert caught.value.path == str(path) and "PKCS#12" in caught.value.reason


def test_jwt_expiry_is_read_without_verifying_the_signature(tmp_path: Path) -> None:
    token = make_jwt(3)
    path = tmp_path / "orders-service.jwt"
    path.write_text(token + "\n")
    found = inventory.read_file(path)
    assert found.kind == "token" and found.subject == "svc-orders"
    assert found.expires_at == datetime.fromtimestamp(int((NOW + timedelta(days=3)).timestamp()), UTC)


def test_an_expired_jwt_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.token"
    path.write_text(make_jwt(-2))
    assert inventory.read_file(path).expires_at < NOW


def test_folder_scan_reads_everything_and_reports_the_corrupt_file_without_stopping(tmp_path: Path) -> None:
    # given a folder: two certificates (one in a subfolder), a JWT, a key alone, a corrupt PEM, a README
    good, key = make_cert("good", 30)
    (tmp_path / "good.pem").write_bytes(pem(good))
    (tmp_path / "team-b").mkdir()
    (tmp_path / "team-b" / "good.crt").write_bytes(pem(make_cert("other", 60)[0]))
    (tmp_path / "svc.jwt").write_text(make_jwt(10))
    (tmp_path / "good.key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    (tmp_path / "README.md").write_text("certificates live here")
    seen: list[Path] = []
    # when the folder is scanned
    items = list(inventory.scan_path(tmp_path, progress=seen.append))
    # then every credential is found, named by its path inside the folder, and the corrupt one is reported
    found = {i.name: i for i in items if isinstance(i, Found)}
    bad = [i for i in items if isinstance(i, Unreadable)]
    assert set(found) == {"good", "team-b/good", "svc"}
    assert [b.name for b in bad] == ["broken"] and "malformed PEM" in bad[0].reason
    assert bad[0].path == str(tmp_path / "broken.pem")
    assert len(seen) == 5  # the progress bar advances once per candidate file


def test_declared_list_needs_name_kind_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("credentials:\n  - {name: partner-key, kind: api_key, expires_at: 2027-01-31}\n"
                    "  - {name: no-date, kind: api_key}\n")
    with pytest.raises(CredentialError, match=r"\[1\].*missing expires_at"):
        inventory.load_declared(path)


def test_parse_expiry_accepts_dates_and_zulu_times() -> None:
    assert inventory.parse_expiry("2027-01-31") == datetime(2027, 1, 31, tzinfo=UTC)
    assert inventory.parse_expiry("2027-01-31T10:00:00Z") == datetime(2027, 1, 31, 10, tzinfo=UTC)
    with pytest.raises(CredentialError):
        inventory.parse_expiry("next tuesday")


# --- hostile files: only regular files under the folder given, size-capped, no content in a reason -------


def unreadable(folder: Path) -> dict[str, str]:
    return {i.name: i.reason for i in inventory.scan_path(folder) if isinstance(i, Unreadable)}


def test_a_symlink_out_of_the_folder_is_refused_and_nothing_of_its_target_shows(tmp_path: Path) -> None:
    # given a folder with a good certificate and links to a secret file outside it and to /dev/zero
    folder, outside = tmp_path / "pki", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    (outside / "shadow").write_bytes(SECRET)
    (folder / "good.pem").write_bytes(pem(make_cert("good", 30)[0]))
    (folder / "shadow.der").symlink_to(outside / "shadow")
    (folder / "zero.pem").symlink_to("/dev/zero")
    (folder / "inside.pem").symlink_to(folder / "good.pem")  # a link that stays inside is fine
    # when the folder is scanned, then both links out are reported, never read
    items = list(inventory.scan_path(folder))
    assert {i.name for i in items if isinstance(i, Found)} == {"good", "inside"}
    assert unreadable(folder) == {"shadow": f"resolves outside {folder} (a symlink?): not read",
                                  "zero": f"resolves outside {folder} (a symlink?): not read"}
    # and a single file given directly is bounded by its own folder
    with pytest.raises(CredentialError, match="resolves outside"):
        inventory.read_file(folder / "shadow.der")


def test_a_file_that_is_not_a_certificate_is_reported_without_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "shadow.der").write_bytes(SECRET)  # cryptography's error named the first byte's tag (114: "r")
    (tmp_path / "broken.jwt").write_bytes(b"eyJhbGciOiJIUzI1NiJ9.\xffhunter2.x")
    reasons = unreadable(tmp_path)
    assert reasons == {"shadow": "neither PEM nor DER certificate", "broken": "not a JWT (DecodeError)"}


@pytest.mark.timeout(30)
def test_fifos_and_oversized_files_are_refused_without_blocking_or_reading_them(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.pem")  # nobody writes: a plain read blocks forever
    with (tmp_path / "huge.pem").open("wb") as f:
        f.truncate(2 * inventory.MAX_FILE_BYTES)  # sparse: 2 MB that used to be read whole every sweep
    assert unreadable(tmp_path) == {"pipe": "not a regular file: not read",
                                    "huge": "is 2 MB, larger than the limit of 1 MB"}


def test_a_declared_list_is_parsed_safely_and_never_echoed(tmp_path: Path) -> None:
    cases = {
        "bomb.yaml": ("credentials: []\n" + ALIAS_BOMB, "line 8: expands to more than 1,000,000 nodes"),
        "twice.yaml": ("credentials: []\ncredentials: []\n", "line 2: duplicate key 'credentials' (first at line 1)"),
        "secret.yaml": (f"credentials: [{SECRET.decode()}\n", "line 3: not valid YAML"),
        "secret.json": (f'{{"credentials": [{SECRET.decode()}]}}', "not valid JSON (line 1)"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(CredentialError) as caught:
            inventory.load_declared(path)
        assert expected in caught.value.reason, caught.value.reason
        assert "hunter2" not in caught.value.reason and "root" not in caught.value.reason


def test_naive_and_aware_times_compare_in_days_left() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert inventory.days_left(now + timedelta(days=1, hours=23), now) == 1
    assert inventory.days_left(now - timedelta(hours=1), now) == -1
