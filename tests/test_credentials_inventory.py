"""Reading the credential inventory: PEM, DER, bundles, PKCS#12, JWTs, declared entries.

The certificate factories here are shared with tests/test_sweep_credentials.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from herald import credentials
from herald.credentials import CredentialError, Found, Unreadable
from herald.settings import get_settings

NOW = datetime.now(UTC)


def make_cert(cn: str, days: float, *, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
              ca: bool = False, sans: list[str] | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate expiring ``days`` from now (negative: already expired), signed by ``issuer`` or itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=400)).not_valid_after(NOW + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    return builder.sign(signer, hashes.SHA256()), key


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def write_pkcs12(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, password: bytes,
                 extra: list[x509.Certificate] | None = None) -> None:
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"herald", key, cert, extra, serialization.BestAvailableEncryption(password)))


def make_jwt(days: float, **claims: object) -> str:
    exp = int((NOW + timedelta(days=days)).timestamp())
    return jwt.encode({"exp": exp, "sub": "svc-orders", "iss": "https://idp.example.com", **claims},
                      "not-a-real-secret-but-long-enough-for-hs256", algorithm="HS256")


class Env(dict[str, str]):
    """HERALD_* variables set for one test: ``env["HERALD_X"] = "1"``; herald re-reads its settings."""

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        os.environ[key] = value
        get_settings.cache_clear()


def env_override() -> Iterator[Env]:
    """The body of an ``env`` fixture (each test module declares its own, see below)."""
    before = dict(os.environ)
    yield Env()
    os.environ.clear()
    os.environ.update(before)
    get_settings.cache_clear()


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
    found = credentials.read_file(path)
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
    found = credentials.read_file(path)
    assert (found.expires_at, found.fingerprint) == (cert.not_valid_after_utc, fingerprint(cert))


def test_chain_whose_intermediate_expires_first_counts_the_earliest(tmp_path: Path) -> None:
    # given a PEM bundle: leaf (200 days), intermediate (5 days), root (1000 days)
    root = make_cert("Root CA", 1000, ca=True)
    inter = make_cert("Intermediate CA", 5, issuer=root, ca=True)
    leaf, _ = make_cert("api.example.com", 200, issuer=inter)
    path = tmp_path / "api-chain.pem"
    path.write_bytes(pem(leaf, inter[0], root[0]))
    found = credentials.read_file(path)
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
    found = credentials.read_file(path)
    assert (found.expires_at, found.fingerprint) == (cert.not_valid_after_utc, fingerprint(cert))


def test_pkcs12_with_a_wrong_password_is_unreadable_with_a_clear_reason(tmp_path: Path,
                                                                       env: dict[str, str]) -> None:
    cert, key = make_cert("b2b-signing", 20)
    path = tmp_path / "b2b.pfx"
    write_pkcs12(path, cert, key, b"s3cret")
    env["HERALD_CREDENTIAL_PKCS12_PASSWORD"] = "wrong"
    with pytest.raises(CredentialError) as caught:
        credentials.read_file(path)
    assert caught.value.path == str(path) and "PKCS#12" in caught.value.reason


def test_jwt_expiry_is_read_without_verifying_the_signature(tmp_path: Path) -> None:
    token = make_jwt(3)
    path = tmp_path / "orders-service.jwt"
    path.write_text(token + "\n")
    found = credentials.read_file(path)
    assert found.kind == "token" and found.subject == "svc-orders"
    assert found.expires_at == datetime.fromtimestamp(int((NOW + timedelta(days=3)).timestamp()), UTC)


def test_an_expired_jwt_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.token"
    path.write_text(make_jwt(-2))
    assert credentials.read_file(path).expires_at < NOW


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
    items = list(credentials.scan_path(tmp_path, progress=seen.append))
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
        credentials.load_declared(path)


def test_parse_expiry_accepts_dates_and_zulu_times() -> None:
    assert credentials.parse_expiry("2027-01-31") == datetime(2027, 1, 31, tzinfo=UTC)
    assert credentials.parse_expiry("2027-01-31T10:00:00Z") == datetime(2027, 1, 31, 10, tzinfo=UTC)
    with pytest.raises(CredentialError):
        credentials.parse_expiry("next tuesday")
