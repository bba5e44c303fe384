"""People's sign-in: who a bearer token belongs to, as a directory person.

Two ways in. With an identity provider, a person presents its OIDC token (ID or access token, a JWT):
herald checks the signature against the provider's published keys (PyJWT's ``PyJWKClient`` on
``HERALD_OIDC_JWKS_URL``), the issuer, the audience and the expiry, then maps the token's identity
(``email``, else ``preferred_username``, else ``sub``) to a directory person. Without one, an operator
runs ``herald people link PERSON``: a one-time link (:func:`create_link`) that the person's page or app
exchanges once (:func:`exchange_link`) for a session token, good for ``HERALD_SESSION_TTL_S``.

Links and sessions are 32 random bytes; only their SHA-256 is stored (``sign_in_tokens``). A refusal is
a :class:`SignInRefused` (the door answers 401) whose reason never repeats the token.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from herald.models import Person, SignInToken, utcnow
from herald.settings import get_settings

__all__ = ["SignInRefused", "create_link", "exchange_link", "person_for_bearer", "resolve_identity"]

LINK_PREFIX, SESSION_PREFIX = "hl_", "hs_"
# Signatures by the provider's public keys only: never HS* (a shared secret has no place in a JWKS).
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_JWKS_TIMEOUT_S = 10.0  # one fetch of the provider's keys
_JWKS_LIFESPAN_S = 300.0  # the fetched keys are reused this long (a rotated key is fetched on first sight)
_LEEWAY_S = 30  # clock skew tolerated on exp, nbf and iat
_IDENTITY_CLAIMS = ("email", "preferred_username", "sub")


class SignInRefused(Exception):
    """A bearer token that names nobody herald knows; the door answers 401 with ``reason``."""

    status = 401

    def __init__(self, reason: str) -> None:
        reason = reason if len(reason) <= 200 else reason[:199] + "…"  # a token's header can say anything
        super().__init__(reason)
        self.reason = reason


def create_link(s: Session, person_id: str, *, now: datetime | None = None) -> str:
    """A one-time sign-in link token for an active person (LookupError: none with that id).

    It expires after ``HERALD_SIGNIN_LINK_TTL_S``; the row keeps only its hash and expiry."""
    person = s.get(Person, person_id)
    if person is None or not person.active:
        raise LookupError(f"no active person {person_id!r} in the directory")
    return _issue(s, "link", person.id, get_settings().signin_link_ttl_s, now)


def exchange_link(s: Session, token: str, *, now: datetime | None = None) -> str:
    """The session token a one-time link yields; the link is used up, even by two exchanges at once."""
    now = now or utcnow()
    digest = _digest(token.strip())
    # One UPDATE claims the link: of two concurrent exchanges, only one sees its row still unused.
    person_id = s.scalar(
        update(SignInToken)
        .where(SignInToken.token_hash == digest, SignInToken.kind == "link", SignInToken.used_at.is_(None),
               SignInToken.revoked_at.is_(None), SignInToken.expires_at > now)
        .values(used_at=now).returning(SignInToken.person_id))
    if person_id is None:
        raise SignInRefused(_why_not(s, digest, "link", now))
    _active_person(s, person_id)
    return _issue(s, "session", person_id, get_settings().session_ttl_s, now)


def person_for_bearer(s: Session, bearer: str, *, now: datetime | None = None) -> str:
    """The directory person a session token or an OIDC token belongs to; SignInRefused otherwise."""
    bearer = bearer.strip()
    if bearer.startswith(SESSION_PREFIX):
        return _session_person(s, bearer, now or utcnow())
    if bearer.count(".") == 2:
        return _oidc_person(s, bearer)
    if bearer.startswith(LINK_PREFIX):
        raise SignInRefused("a sign-in link is not a session: exchange it first")
    raise SignInRefused("malformed bearer token (expected a session token or an OIDC token)")


def resolve_identity(s: Session, name: str) -> str | None:
    """The id of the one active person whose id, email or an alias is ``name`` (any case); None when no
    one or several match (``Emil``, ``emil`` and ``emil@example.com`` are one person, never three)."""
    wanted = name.strip().casefold()
    if not wanted:
        return None
    found = {person_id for person_id, email, aliases in
             s.execute(select(Person.id, Person.email, Person.aliases).where(Person.active.is_(True)))
             if wanted in identity_names(person_id, email, aliases)}
    return found.pop() if len(found) == 1 else None


def identity_names(person_id: str, email: str | None, aliases: list[str] | None) -> set[str]:
    """Every name a person goes by (id, email, aliases), normalized as answers and requesters are compared."""
    return {n.strip().casefold() for n in (person_id, email or "", *(aliases or [])) if n and n.strip()}


def _issue(s: Session, kind: str, person_id: str, ttl_s: float, now: datetime | None) -> str:
    now = now or utcnow()
    token = (LINK_PREFIX if kind == "link" else SESSION_PREFIX) + secrets.token_urlsafe(32)
    s.add(SignInToken(token_hash=_digest(token), kind=kind, person_id=person_id, created_at=now,
                      expires_at=now + timedelta(seconds=ttl_s)))
    s.flush()
    return token


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _session_person(s: Session, token: str, now: datetime) -> str:
    row = s.get(SignInToken, _digest(token))
    if row is None or row.kind != "session" or row.revoked_at is not None or row.expires_at <= now:
        raise SignInRefused(_why_not(s, _digest(token), "session", now))
    return _active_person(s, row.person_id)


def _why_not(s: Session, digest: str, kind: str, now: datetime) -> str:
    """Why a link or session token was refused, in words that never repeat it."""
    row = s.get(SignInToken, digest)
    what = "sign-in link" if kind == "link" else "session"
    if row is None or row.kind != kind:
        return f"unknown {what}"
    if row.revoked_at is not None:
        return f"this {what} was revoked"
    if row.used_at is not None:
        return f"this {what} was already used"
    if row.expires_at <= now:
        return f"this {what} expired at {row.expires_at.isoformat(timespec='seconds')}"
    return f"unknown {what}"


def _active_person(s: Session, person_id: str) -> str:
    person = s.get(Person, person_id)
    if person is None or not person.active:
        raise SignInRefused(f"{person_id} is no longer an active person in the directory")
    return person.id


def _oidc_person(s: Session, token: str) -> str:
    claims = _verified_claims(token)
    claim, value = next(((c, claims[c]) for c in _IDENTITY_CLAIMS if _usable(claims, c)), ("", None))
    if not isinstance(value, str):
        raise SignInRefused("the OIDC token names nobody (no email, preferred_username or sub claim)")
    person_id = resolve_identity(s, value)
    if person_id is None:
        raise SignInRefused(f"no single active directory person matches the OIDC {claim} {value!r}")
    return person_id


def _usable(claims: dict[str, Any], claim: str) -> bool:
    # An address the provider says it has not verified proves nothing about who signed in.
    if claim == "email" and claims.get("email_verified") is False:
        return False
    return isinstance(claims.get(claim), str) and bool(claims[claim].strip())


def _verified_claims(token: str) -> dict[str, Any]:
    """The claims of an OIDC token whose signature, issuer, audience and expiry hold; SignInRefused else.

    PyJWT's errors stop here, translated into one reason (https://pyjwt.readthedocs.io/en/stable/usage.html
    #retrieve-rsa-signing-keys-from-a-jwks-endpoint)."""
    settings = get_settings()
    if not (settings.oidc_issuer and settings.oidc_audience and settings.oidc_jwks_url):
        raise SignInRefused("OIDC sign-in is not configured (HERALD_OIDC_ISSUER, HERALD_OIDC_AUDIENCE, "
                            "HERALD_OIDC_JWKS_URL)")
    try:
        signing_key = _jwks_client(settings.oidc_jwks_url).get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token, signing_key, algorithms=_ALGORITHMS, audience=settings.oidc_audience,
            issuer=settings.oidc_issuer, leeway=_LEEWAY_S, options={"require": ["exp", "iss", "aud"]})
    except jwt.PyJWKClientConnectionError as exc:
        raise SignInRefused(f"the identity provider's keys could not be fetched: {exc}") from exc
    except jwt.ExpiredSignatureError as exc:
        raise SignInRefused("the OIDC token expired") from exc
    except jwt.PyJWTError as exc:  # unknown kid, bad signature, wrong issuer or audience, missing claim
        raise SignInRefused(f"OIDC token refused: {exc}") from exc
    return claims


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    """One client per JWKS URL, so that its fetched key set is reused across requests."""
    return jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=_JWKS_LIFESPAN_S, timeout=_JWKS_TIMEOUT_S)
