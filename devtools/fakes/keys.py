"""Credentials for the fakes, made fresh: a CA and server certificate, an FCM service account,
an APNs signing key, a VAPID key. Written to one folder with the environment that points herald
at them (``herald fakes serve`` prints it)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

TEAM_ID = "HERALDTEAM"
KEY_ID = "FAKEKEY001"
PROJECT_ID = "herald-fake"
CLIENT_EMAIL = "herald@herald-fake.iam.gserviceaccount.com"


def _write(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class FakeKeys:
    folder: Path
    ca_file: Path
    cert_file: Path
    cert_key_file: Path
    fcm_service_account: Path
    fcm_public_key: rsa.RSAPublicKey
    apns_key_file: Path
    apns_public_key: ec.EllipticCurvePublicKey
    vapid_key_file: Path


def make(folder: Path, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> FakeKeys:
    """Fresh keys in ``folder`` (the FCM token endpoint is filled in by the server)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald fake CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file = _write(folder / "fake-ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    cert_file = _write(folder / "fake-server.pem", leaf.public_bytes(serialization.Encoding.PEM))
    cert_key_file = _write(folder / "fake-server.key", _pem(leaf_key))
    fcm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = {"type": "service_account", "project_id": PROJECT_ID, "private_key_id": "fake",
               "private_key": _pem(fcm_key).decode(), "client_email": CLIENT_EMAIL,
               "token_uri": "http://127.0.0.1:0/token"}
    fcm_file = _write(folder / "fcm-service-account.json", json.dumps(account, indent=2).encode())
    apns_key = ec.generate_private_key(ec.SECP256R1())
    apns_file = _write(folder / f"AuthKey_{KEY_ID}.p8", _pem(apns_key))
    vapid_key = ec.generate_private_key(ec.SECP256R1())
    vapid_file = _write(folder / "vapid-private.pem", _pem(vapid_key))
    return FakeKeys(folder, ca_file, cert_file, cert_key_file, fcm_file, fcm_key.public_key(), apns_file,
                    apns_key.public_key(), vapid_file)


def set_token_uri(keys: FakeKeys, uri: str) -> None:
    account = json.loads(keys.fcm_service_account.read_text())
    account["token_uri"] = uri
    _write(keys.fcm_service_account, json.dumps(account, indent=2).encode())
