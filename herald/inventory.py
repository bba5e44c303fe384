"""The credential inventory: what expires, when, who owns it, and which version it is.

Credentials come from three places:

- files and folders (``herald credentials import PATH``), rescanned on every credential sweep:
  PEM certificates (single or bundles), DER, PKCS#12 (password from
  ``HERALD_CREDENTIAL_PKCS12_PASSWORD``) and JWTs (the ``exp`` claim, read without verifying the
  signature: herald only needs the date, and holds no key to verify with);
- declared entries (API keys, client secrets, tokens with a known expiry) from ``herald credentials
  add``, from a YAML/JSON list given to ``herald credentials import``, from :func:`declare` in
  integration code, and from the directory file (a ``credential`` resource whose ``meta`` has
  ``expires_at``);
- every credential has an owner (``team:ID`` or ``person:ID``), an environment and a version:
  the fingerprint of what expires first, so a rotated credential is a new version.

Reading is pure (:func:`read_file`, :func:`scan_path`); storing happens in the caller's session.
Only regular files of at most :data:`MAX_FILE_BYTES` whose real path stays under the folder given are
read (:mod:`herald.safefiles`), and a reason never quotes a file's content.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from herald import safeyaml
from herald.errors import HeraldError
from herald.models import Credential, CredentialSource, Resource, utcnow
from herald.safefiles import InputFileError, read_regular
from herald.settings import get_settings

Kind = Literal["certificate", "token", "api_key", "client_secret"]
KINDS: tuple[str, ...] = ("certificate", "token", "api_key", "client_secret")

# Files a folder scan looks at; anything else (keys, READMEs) is not a credential with an expiry.
CERT_SUFFIXES = {".pem", ".crt", ".cer", ".cert", ".der"}
PKCS12_SUFFIXES = {".p12", ".pfx"}
JWT_SUFFIXES = {".jwt", ".token"}
DECLARED_SUFFIXES = {".yaml", ".yml", ".json"}
SUFFIXES = CERT_SUFFIXES | PKCS12_SUFFIXES | JWT_SUFFIXES

# A certificate bundle or a list of declared keys is kilobytes; a folder is rescanned every sweep.
MAX_FILE_BYTES = 1024 * 1024

OWNER = re.compile(r"^(team|person):[A-Za-z0-9_.@-]+$")


class NotACredential(HeraldError, ValueError):
    """A file a folder scan passes over: a private key alone, say, has nothing that expires."""


class CredentialError(HeraldError, ValueError):
    """A credential or credential file that herald cannot read; ``path`` names the file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Found:
    """One credential read from a file (or from a declared entry)."""

    name: str
    kind: Kind
    fingerprint: str
    expires_at: datetime
    path: str | None = None
    subject: str | None = None
    issuer: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unreadable:
    """A file that looked like a credential and could not be read: the sweep reports it and goes on."""

    name: str
    path: str
    reason: str
    digest: str  # of the file's bytes and the reason: a different breakage is a new notice


# --- reading ------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cert_summary(cert: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes

    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "expires_at": cert.not_valid_after_utc.isoformat(),
            "fingerprint": cert.fingerprint(hashes.SHA256()).hex()}


def _sans(cert: Any) -> list[str]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.value.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.value.get_values_for_type(x509.IPAddress)]


def from_certificates(name: str, path: str, certs: list[Any]) -> Found:
    """One credential for a file's certificates: the leaf describes it, the earliest expiry counts.

    Its version is the fingerprint of the certificate that expires first: renewing an
    intermediate that was about to expire is a rotation too.
    """
    chain = [_cert_summary(c) for c in certs]
    first = min(range(len(certs)), key=lambda i: certs[i].not_valid_after_utc)
    leaf = certs[0]
    return Found(name=name, kind="certificate", fingerprint=chain[first]["fingerprint"],
                 expires_at=certs[first].not_valid_after_utc, path=path,
                 subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
                 details={"sans": _sans(leaf), "chain": chain, "expires_first": chain[first]["subject"]})


def _load_certificates(path: Path, data: bytes) -> list[Any]:
    from cryptography import x509

    suffix = path.suffix.lower()
    if suffix in PKCS12_SUFFIXES:
        from cryptography.hazmat.primitives.serialization import pkcs12

        secret = get_settings().credential_pkcs12_password
        password = secret.get_secret_value().encode() if secret else None
        try:
            _key, cert, extra = pkcs12.load_key_and_certificates(data, password)
        except ValueError:  # its message may quote the file's bytes: say what, not what was read
            hint = "wrong password?" if password else "set HERALD_CREDENTIAL_PKCS12_PASSWORD"
            raise CredentialError(str(path), f"not a readable PKCS#12 file ({hint})") from None
        certs = ([cert] if cert is not None else []) + list(extra or [])
        if not certs:
            raise CredentialError(str(path), "PKCS#12 file holds no certificate")
        return certs
    if b"-----BEGIN" in data:
        if b"CERTIFICATE-----" not in data:
            raise NotACredential(str(path))
        try:
            return list(x509.load_pem_x509_certificates(data))
        except ValueError:
            raise CredentialError(str(path), "malformed PEM certificate") from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:  # cryptography's message names the first byte's tag: the content, never shown
        raise CredentialError(str(path), "neither PEM nor DER certificate") from None


def jwt_expiry(token: str, where: str = "token") -> tuple[datetime, dict[str, Any]]:
    """The ``exp`` of a JWT and its claims, read without verifying the signature."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:  # its message may quote the token: name the kind of problem only
        raise CredentialError(where, f"not a JWT ({type(exc).__name__})") from None
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise CredentialError(where, "JWT has no numeric exp claim")
    return datetime.fromtimestamp(exp, UTC), claims


def read_bytes(path: Path, root: Path | None = None) -> bytes:
    """A credential file's bytes: a regular file under ``root`` (default: its own folder), capped.

    ``root`` is not resolved by the caller: a symlink inside the folder to a file outside it
    (``/etc/shadow``) is refused, not read.
    """
    try:
        return read_regular(path, max_bytes=MAX_FILE_BYTES, root=root if root is not None else path.absolute().parent)
    except InputFileError as exc:
        raise CredentialError(str(path), exc.reason) from None


def read_file(path: Path, name: str | None = None, root: Path | None = None) -> Found:
    """Read one credential file; raise :class:`CredentialError` naming the file and the reason."""
    name = name or path.stem
    data = read_bytes(path, root)
    if path.suffix.lower() in JWT_SUFFIXES:
        token = data.decode("ascii", errors="replace").strip()
        expires_at, claims = jwt_expiry(token, str(path))
        return Found(name=name, kind="token", fingerprint=sha256_hex(token.encode()), expires_at=expires_at,
                     path=str(path), subject=claims.get("sub"), issuer=claims.get("iss"),
                     details={"claims": sorted(claims)})
    return from_certificates(name, str(path), _load_certificates(path, data))


def candidate_files(root: Path) -> list[Path]:
    """The files a scan of ``root`` reads (``root`` itself unless it is a folder), in a stable order.

    In a folder: every entry with a credential suffix that is not a folder, symlinks and FIFOs
    included (:func:`read_file` refuses those with a reason, so they are reported, not skipped);
    symlinked folders are not followed.
    """
    if not root.is_dir():
        return [root]
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        found += [Path(folder, f) for f in files if Path(f).suffix.lower() in SUFFIXES]
    return sorted(found)


def scan_path(root: Path, progress: Callable[[Path], None] | None = None) -> Iterator[Found | Unreadable]:
    """Read every credential under ``root``; an unreadable file is yielded, never raised."""
    folder = root if root.is_dir() else None  # a single file: its own folder bounds it (read_bytes)
    for path in candidate_files(root):
        # A folder's credentials are named by their path inside it, so two "client.pem" never collide.
        name = path.stem if path == root else str(path.relative_to(root).with_suffix(""))
        try:
            yield read_file(path, name, folder)
        except NotACredential:
            pass
        except CredentialError as exc:
            try:  # a new content is a new notice; what was refused is never read for it
                content = read_bytes(path, folder)
            except CredentialError:
                content = b""
            yield Unreadable(name=name, path=str(path), reason=exc.reason,
                             digest=sha256_hex(content + exc.reason.encode())[:32])
        if progress is not None:
            progress(path)


# --- declared entries ---------------------------------------------------------------------


def declared_version(name: str, expires_at: datetime) -> str:
    """A declared entry without an explicit version: a new expiry date is a new key."""
    return "declared:" + sha256_hex(f"{name}|{expires_at.astimezone(UTC).isoformat()}".encode())[:32]


def parse_expiry(value: object, where: str = "expires_at") -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise CredentialError(where, f"not an ISO date or time: {value!r}") from None
    else:
        raise CredentialError(where, f"not a date: {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_owner(owner: str | None) -> str | None:
    if owner is not None and not OWNER.match(owner):
        raise CredentialError("owner", f"{owner!r} is not team:ID or person:ID")
    return owner


def check_environment(environment: str) -> str:
    known = get_settings().environments
    if environment not in known:
        raise CredentialError("environment", f"unknown environment {environment!r} (known: {', '.join(known)})")
    return environment


def declare(s: Session, *, name: str, kind: Kind, expires_at: datetime, environment: str,
            owner: str | None = None, version: str | None = None, origin: str = "declared") -> Credential:
    """Add or update a declared credential (an API key, a client secret...) in the caller's session.

    The next credential sweep notifies its owner at each threshold. Giving a new ``version``
    (or a new expiry, when no version is given) is a rotation: the thresholds start over.
    """
    if kind not in KINDS:
        raise CredentialError(name, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    expires_at = parse_expiry(expires_at)
    found = Found(name=name, kind=kind, expires_at=expires_at,
                  fingerprint=version or declared_version(name, expires_at))
    return store(s, found, environment=check_environment(environment), owner=check_owner(owner), origin=origin)


def declare_jwt(s: Session, *, name: str, token: str, environment: str, owner: str | None = None) -> Credential:
    """Add a JWT by its ``exp`` claim; its version is the token's hash (a new token is a rotation)."""
    expires_at, claims = jwt_expiry(token.strip(), name)
    found = Found(name=name, kind="token", fingerprint=sha256_hex(token.strip().encode()), expires_at=expires_at,
                  subject=claims.get("sub"), issuer=claims.get("iss"))
    return store(s, found, environment=check_environment(environment), owner=check_owner(owner), origin="declared")


def load_declared(path: Path) -> list[dict[str, Any]]:
    """Entries of a YAML or JSON list of declared credentials (a list, or ``{credentials: [...]}``)."""
    data = read_bytes(path)
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(data)
        else:
            raw, _node = safeyaml.parse(data, where=str(path))
    except safeyaml.YamlError as exc:  # "path:line: problem", never the content
        problem = re.sub(r"^:(\d+): ", r"line \1: ", exc.problems[0].removeprefix(str(path)))
        raise CredentialError(str(path), f"cannot read the list of credentials: {problem}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise CredentialError(str(path), f"cannot read the list of credentials: not valid JSON{where}") from None
    if isinstance(raw, dict):
        raw = raw.get("credentials")
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise CredentialError(str(path), "expected a list of entries (name, kind, expires_at, environment, owner)")
    for index, entry in enumerate(raw):
        missing = {"name", "kind", "expires_at"} - set(entry)
        if missing:
            raise CredentialError(f"{path}[{index}]", f"missing {', '.join(sorted(missing))}")
    return raw


# --- storing ------------------------------------------------------------------------------


def store(s: Session, found: Found, *, environment: str, owner: str | None, origin: str,
          source: CredentialSource | None = None) -> Credential:
    """Insert or update one credential; a new fingerprint starts a new version."""
    now = utcnow()
    row = s.scalar(select(Credential).where(Credential.name == found.name, Credential.environment == environment)
                   .with_for_update())
    if row is None:
        row = Credential(name=found.name, environment=environment, origin=origin, version_since=now)
        s.add(row)
    elif row.fingerprint != found.fingerprint:
        row.version_since = now
    row.kind, row.origin, row.fingerprint, row.expires_at = found.kind, origin, found.fingerprint, found.expires_at
    row.path, row.subject, row.issuer, row.details = found.path, found.subject, found.issuer, found.details
    row.owner = owner if owner is not None else row.owner
    row.source_id = source.id if source is not None else row.source_id
    row.error, row.active, row.seen_at = None, True, now
    s.flush()
    return row


def store_unreadable(s: Session, bad: Unreadable, *, environment: str, owner: str | None,
                     source: CredentialSource) -> Credential:
    """Keep the last good version's data; record the error (the sweep notifies it once)."""
    row = s.scalar(select(Credential).where(Credential.name == bad.name, Credential.environment == environment)
                   .with_for_update())
    if row is None:
        row = Credential(name=bad.name, environment=environment, kind="certificate", origin="file",
                         version_since=utcnow(), details={})
        s.add(row)
    row.path, row.owner, row.source_id = bad.path, owner if owner is not None else row.owner, source.id
    row.error, row.active, row.seen_at = bad.reason, True, utcnow()
    row.details = {**(row.details or {}), "error_digest": bad.digest}
    s.flush()
    return row


def add_source(s: Session, path: Path, *, environment: str, owner: str | None) -> CredentialSource:
    """Register a file or folder to rescan on every sweep (the same path again updates it)."""
    # absolute, not resolved: each rescan resolves it again and reads only what stays under it
    resolved = os.path.abspath(path)
    source = s.scalar(select(CredentialSource).where(CredentialSource.path == resolved))
    if source is None:
        source = CredentialSource(path=resolved, environment=check_environment(environment),
                                  owner=check_owner(owner))
        s.add(source)
    else:
        source.environment, source.owner = check_environment(environment), check_owner(owner)
    s.flush()
    return source


def rescan_source(s: Session, source: CredentialSource,
                  progress: Callable[[Path], None] | None = None) -> dict[str, int]:
    """Read a source again; credentials whose files disappeared become inactive."""
    root = Path(source.path)
    seen: set[int] = set()
    counts = {"read": 0, "unreadable": 0, "retired": 0}
    if not root.exists():
        counts["unreadable"] += 1
        bad = Unreadable(name=root.stem, path=str(root), reason="file or folder does not exist",
                         digest=sha256_hex(b"missing" + str(root).encode())[:32])
        seen.add(store_unreadable(s, bad, environment=source.environment, owner=source.owner, source=source).id)
    else:
        for item in scan_path(root, progress):
            if isinstance(item, Found):
                row = store(s, item, environment=source.environment, owner=source.owner, origin="file",
                            source=source)
                counts["read"] += 1
            else:
                row = store_unreadable(s, item, environment=source.environment, owner=source.owner, source=source)
                counts["unreadable"] += 1
            seen.add(row.id)
    gone = s.execute(update(Credential).where(Credential.source_id == source.id, Credential.active.is_(True),
                                              Credential.id.not_in(seen or {-1}))
                     .values(active=False).returning(Credential.id))
    counts["retired"] = len(gone.all())
    return counts


def sync_directory(s: Session) -> int:
    """Declared credentials from the directory file: ``credential`` resources whose meta has ``expires_at``.

        resources:
          - kind: credential
            name: partner-api-key
            environment: prod
            owners: ["team:security"]
            meta: {credential_kind: api_key, expires_at: 2026-12-01T00:00:00Z}

    The resource's owners receive the notifications (the pipeline routes by the resource).
    """
    settings = get_settings()
    seen: set[int] = set()
    for res in s.scalars(select(Resource).where(Resource.kind == "credential")):
        meta = res.meta or {}
        if "expires_at" not in meta:
            continue
        environment = res.environment if res.environment != "*" else meta.get("environment",
                                                                              settings.ops_environment)
        try:
            expires_at = parse_expiry(meta["expires_at"], f"resource {res.name}")
            kind = meta.get("credential_kind", "api_key")
            found = Found(name=res.name, kind=kind if kind in KINDS else "api_key", expires_at=expires_at,
                          fingerprint=str(meta.get("version") or declared_version(res.name, expires_at)))
        except CredentialError:
            continue  # `herald directory check` is where a bad file is reported
        owner = res.owners[0] if res.owners else None
        seen.add(store(s, found, environment=environment, owner=owner, origin="directory").id)
    gone = s.execute(update(Credential).where(Credential.origin == "directory", Credential.active.is_(True),
                                              Credential.id.not_in(seen or {-1})).values(active=False)
                     .returning(Credential.id))
    return len(gone.all())


def retire(s: Session, *, name: str, environment: str) -> Credential:
    """Stop tracking a declared credential nobody uses any more: it becomes inactive (no sweep notifies its
    owners, ``herald status`` no longer asks for it); declaring it again brings it back. A credential read from
    a file or from the directory follows its source instead: remove the file or the directory entry."""
    row = s.scalar(select(Credential).where(Credential.name == name, Credential.environment == environment)
                   .with_for_update())
    if row is None:
        raise CredentialError(name, f"no credential of this name in {environment} (herald credentials list --all)")
    if row.origin == "file":
        raise CredentialError(name, f"read from {row.path}: remove or replace the file, the next credential sweep "
                                    "follows it")
    if row.origin == "directory":
        raise CredentialError(name, "declared in the directory file: remove its resource there and apply the file")
    row.active = False
    s.flush()
    return row


# --- reading the inventory ----------------------------------------------------------------


def days_left(expires_at: datetime, now: datetime) -> int:
    """Whole days until expiry, rounded down (negative once expired)."""
    return math.floor((expires_at - now).total_seconds() / 86400)


def status(row: Credential, now: datetime) -> str:
    if row.error:
        return "unreadable"
    if row.expires_at is None:
        return "unknown"
    if row.expires_at <= now:
        return "expired"
    return "ok"


def list_credentials(s: Session, *, environment: str | None = None, include_inactive: bool = False,
              now: datetime | None = None) -> list[dict[str, Any]]:
    """The rows ``herald credentials list`` prints, soonest expiry first."""
    now = now or utcnow()
    query = select(Credential)
    if environment:
        query = query.where(Credential.environment == environment)
    if not include_inactive:
        query = query.where(Credential.active.is_(True))
    rows = sorted(s.scalars(query), key=lambda r: (r.expires_at is None, r.expires_at or now, r.name))
    return [{"name": r.name, "kind": r.kind, "environment": r.environment, "owner": r.owner,
             "expires_at": r.expires_at.isoformat() if r.expires_at else None,
             "days_left": days_left(r.expires_at, now) if r.expires_at else None,
             "status": status(r, now), "version": r.fingerprint, "origin": r.origin, "path": r.path,
             "subject": r.subject, "error": r.error, "active": r.active} for r in rows]
