"""What tests of both tiers build: certificates and JWTs with a chosen expiry, hostile input, HERALD_* settings
set for one test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

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
    """The body of an ``env`` fixture (each test module that needs one declares it: ``yield from env_override()``)."""
    before = dict(os.environ)
    yield Env()
    os.environ.clear()
    os.environ.update(before)
    get_settings.cache_clear()


# What a file outside a scanned folder holds: no error message may show any of it.
SECRET = b"root:$6$hunter2-s3cr3t$abcdefghijklmnopqrstuvwxyz:19000:0:99999:7:::\n"


# 342 bytes that expand to 9**9 (387 million) strings: it took 12 GB within two minutes.
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


# A directory file with a problem of each kind, each on a line of its own (the tests name them by line).
BROKEN_DIRECTORY = """\
people:
  - id: ana
    name: Ana
    timezone: Mars/Olympus
    devices:
      - {channel: pager, token: x}
  - id: ben
    name: Ben
    quiet_hours: ["25:00", "07:00"]
    devices:
      - {channel: webpush, token: not-a-subscription}
  - id: ana
    name: Ana again
teams:
  - id: ops
    members: [ana, zoe]
routes:
  - id: r1
    match: {types: ["artefact.*"]}
    recipients: [{team: nobody}]
  - id: r2
    recipients: [{team: ops, person: ana}]
"""
