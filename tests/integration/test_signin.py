"""People's sign-in on real Postgres: one-time links, sessions, OIDC tokens, and identities.

The identity provider is a local JWKS served by a small HTTP server in the test, with an RSA key made
here; tokens are signed with PyJWT as a provider would. Time is passed in (``now``) or written into the
rows, never waited for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, text, update

from herald import db, signin
from herald.models import Person, SignInToken
from herald.settings import get_settings
from herald.signin import SignInRefused
from tests.integration.conftest import ROOT
from tests.integration.helpers import rows

ISSUER, AUDIENCE, KID = "https://idp.example.test/", "herald", "key-1"


def add_people() -> None:
    with db.session() as s:
        s.add_all([
            Person(id="emil", name="Emil", email="Emil.Berg@example.com", aliases=["eberg", "EB-42"]),
            Person(id="chen", name="Chen", email="chen@example.com", aliases=["c.wu"]),
            Person(id="gone", name="Gone", email="gone@example.com", active=False),
            # two people answering to one alias: it names neither
            Person(id="ana", name="Ana", aliases=["ops"]),
            Person(id="bo", name="Bo", aliases=["OPS"]),
        ])


@pytest.fixture
def people(clean: None) -> None:
    add_people()


def bearer_person(bearer: str, now: datetime | None = None) -> str:
    with db.session() as s:
        return signin.person_for_bearer(s, bearer, now=now)


def refused(bearer: str, now: datetime | None = None) -> str:
    with pytest.raises(SignInRefused) as caught:
        bearer_person(bearer, now)
    assert len(bearer) < 8 or bearer not in caught.value.reason  # never echoes a token
    return caught.value.reason


def new_link(person_id: str = "chen", now: datetime | None = None) -> str:
    with db.session() as s:
        return signin.create_link(s, person_id, now=now)


def exchange(token: str, now: datetime | None = None) -> str:
    with db.session() as s:
        return signin.exchange_link(s, token, now=now)


def exchange_refused(token: str, now: datetime | None = None) -> str:
    with pytest.raises(SignInRefused) as caught:
        exchange(token, now)
    return caught.value.reason


# --- identities ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "person"), [
    ("emil", "emil"), ("Emil", "emil"), ("EMIL ", "emil"), ("emil.berg@example.com", "emil"),
    ("EBERG", "emil"), ("eb-42", "emil"), ("C.Wu", "chen"), ("chen@EXAMPLE.com", "chen"),
    ("gone", None), ("gone@example.com", None),  # not active
    ("ops", None),  # ambiguous
    ("mallory", None), ("", None), ("emil@", None), ("Emil Berg", None),
])
def test_an_identity_is_one_active_person_by_id_email_or_alias_in_any_case(
        people: None, name: str, person: str | None) -> None:
    with db.session() as s:
        assert signin.resolve_identity(s, name) == person


# --- one-time links and sessions ----------------------------------------------------------------------

def test_a_link_yields_a_session_once(people: None) -> None:
    # given a link for chen
    link = new_link("chen")
    # when it is exchanged
    session = exchange(link)
    # then the session names chen
    assert bearer_person(session) == "chen"
    # and the link is used up
    assert exchange_refused(link) == "this sign-in link was already used"
    # and a link is not a session, nor a session a link
    assert refused(link) == "a sign-in link is not a session: exchange it first"
    assert exchange_refused(session) == "unknown sign-in link"


def test_links_and_sessions_are_stored_only_as_hashes(people: None) -> None:
    link = new_link("chen")
    session = exchange(link)
    with db.session() as s:
        dumped = " ".join(str(r) for r in s.execute(text("SELECT * FROM sign_in_tokens")).all())
    assert "chen" in dumped
    for token in (link, session):
        assert token not in dumped and token[3:] not in dumped


def test_a_link_expires(people: None) -> None:
    start = datetime.now(UTC)
    link = new_link("chen", now=start)
    ttl = timedelta(seconds=get_settings().signin_link_ttl_s)
    assert ttl == timedelta(minutes=15)
    assert exchange_refused(link, now=start + ttl).startswith("this sign-in link expired at ")
    # still good one second before
    assert bearer_person(exchange(link, now=start + ttl - timedelta(seconds=1))) == "chen"


def test_a_session_expires(people: None) -> None:
    start = datetime.now(UTC)
    session = exchange(new_link("chen", now=start), now=start)
    ttl = timedelta(seconds=get_settings().session_ttl_s)
    assert ttl == timedelta(hours=12)
    assert bearer_person(session, now=start + ttl - timedelta(seconds=1)) == "chen"
    assert refused(session, now=start + ttl).startswith("this session expired at ")
    # and a session row made to expire in the past is refused now
    with db.session() as s:
        s.execute(update(SignInToken).values(expires_at=start - timedelta(seconds=1)))
    assert refused(session).startswith("this session expired")


def test_a_link_for_nobody_active_is_refused_and_a_session_ends_with_its_person(people: None) -> None:
    with db.session() as s:
        for person_id in ("gone", "mallory", "Chen"):
            with pytest.raises(LookupError):
                signin.create_link(s, person_id)
    session = exchange(new_link("chen"))
    with db.session() as s:
        s.execute(update(Person).where(Person.id == "chen").values(active=False))
    assert refused(session) == "chen is no longer an active person in the directory"


def test_unknown_tampered_and_revoked_tokens_are_refused(people: None) -> None:
    session = exchange(new_link("chen"))
    tampered = session[:-1] + ("A" if session[-1] != "A" else "B")
    assert refused(tampered) == "unknown session"
    assert refused("hs_") == "unknown session"
    assert "malformed" in refused("")
    assert "malformed" in refused("not a token")
    assert exchange_refused("hl_nothing") == "unknown sign-in link"
    with db.session() as s:
        s.execute(update(SignInToken).where(SignInToken.kind == "session").values(revoked_at=datetime.now(UTC)))
    assert refused(session) == "this session was revoked"
    assert rows(select(SignInToken.kind, SignInToken.person_id).order_by(SignInToken.kind)) == [
        ("link", "chen"), ("session", "chen")]


# --- OIDC ---------------------------------------------------------------------------------------------

class IdentityProvider:
    """An RSA signing key and the JWKS that publishes it, served on 127.0.0.1."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, key: rsa.RSAPrivateKey | None = None, kid: str = KID, **claims: Any) -> str:
        now = datetime.now(UTC)
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "00u-1234", "iat": now, "exp": now + timedelta(minutes=5),
                **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key or self.key, algorithm="RS256",
                          headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def provider() -> Iterator[IdentityProvider]:
    idp = IdentityProvider()
    yield idp
    idp.close()


@pytest.fixture
def oidc(provider: IdentityProvider, people: None) -> Iterator[IdentityProvider]:
    """herald configured for the local identity provider."""
    values = {"HERALD_OIDC_ISSUER": ISSUER, "HERALD_OIDC_AUDIENCE": AUDIENCE, "HERALD_OIDC_JWKS_URL": provider.url}
    os.environ.update(values)
    get_settings.cache_clear()
    yield provider
    for name in values:
        os.environ.pop(name, None)
    get_settings.cache_clear()


def test_a_valid_oidc_token_names_its_person_by_email_username_or_subject(oidc: IdentityProvider) -> None:
    assert bearer_person(oidc.token(email="EMIL.BERG@example.com")) == "emil"
    assert bearer_person(oidc.token(email="chen@example.com", email_verified=True)) == "chen"
    assert bearer_person(oidc.token(preferred_username="eberg")) == "emil"
    assert bearer_person(oidc.token(sub="c.wu")) == "chen"


def test_the_first_identity_claim_present_decides(oidc: IdentityProvider) -> None:
    # the email names nobody: the username is not tried in its place
    reason = refused(oidc.token(email="mallory@example.com", preferred_username="chen"))
    assert reason == "no single active directory person matches the OIDC email 'mallory@example.com'"
    # an email the provider did not verify proves nothing; the username decides
    assert bearer_person(oidc.token(email="chen@example.com", email_verified=False,
                                    preferred_username="eberg")) == "emil"


@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": "another-app"}, "OIDC token refused: Audience doesn't match"),
    ({"iss": "https://evil.example.test/"}, "OIDC token refused: Invalid issuer"),
    ({"exp": datetime.now(UTC) - timedelta(hours=1)}, "the OIDC token expired"),
    ({"exp": None}, "OIDC token refused: Token is missing the \"exp\" claim"),
    ({"sub": "mallory"}, "no single active directory person matches the OIDC sub 'mallory'"),
    ({"sub": "gone"}, "no single active directory person matches the OIDC sub 'gone'"),
    ({"preferred_username": "ops"}, "no single active directory person matches the OIDC preferred_username 'ops'"),
])
def test_oidc_tokens_that_do_not_hold_are_refused(oidc: IdentityProvider, claims: dict[str, Any],
                                                  reason: str) -> None:
    assert refused(oidc.token(**claims)) == reason


def test_oidc_tokens_signed_by_another_key_are_refused(oidc: IdentityProvider) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # an unknown key id
    assert refused(oidc.token(stranger, kid="key-2", sub="chen")) == (
        'OIDC token refused: Unable to find a signing key that matches: "key-2"')
    # the provider's key id on another key's signature
    assert refused(oidc.token(stranger, sub="chen")) == "OIDC token refused: Signature verification failed"
    # a symmetric signature with the published public modulus as its secret: not an accepted algorithm
    published = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(oidc.key.public_key()))["n"]
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "chen",
                         "exp": datetime.now(UTC) + timedelta(minutes=5)}, published, algorithm="HS256",
                        headers={"kid": KID})
    assert refused(forged).startswith("OIDC token refused: ")


def test_oidc_is_refused_when_not_configured(provider: IdentityProvider, people: None) -> None:
    assert get_settings().oidc_issuer is None
    assert refused(provider.token(sub="chen")).startswith("OIDC sign-in is not configured")


# --- the CLI ------------------------------------------------------------------------------------------

def herald(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200", "TERM": "dumb", **env})


def test_cli_prints_a_one_time_link_that_signs_the_person_in_once(people: None) -> None:
    # when an operator asks for chen's link by email, in another case
    result = herald("people", "link", "CHEN@example.com", HERALD_PUBLIC_URL="https://herald.example.test/")
    assert result.returncode == 0, result.stderr
    link, said = result.stdout.strip().splitlines()
    # then it opens the responder page with the token, and says for whom and until when
    assert link.startswith("https://herald.example.test/app/#signin=hl_")
    assert said.startswith("one-time sign-in link for chen, valid until ")
    # and its token signs chen in, once
    token = link.split("#signin=", 1)[1]
    assert bearer_person(exchange(token)) == "chen"
    assert exchange_refused(token) == "this sign-in link was already used"


def test_cli_json_link_names_its_expiry(people: None) -> None:
    result = herald("people", "link", "eberg", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["person"] == "emil" and printed["link"].endswith("/app/#signin=" + printed["token"])
    assert [r[0] for r in rows(select(SignInToken.expires_at))] == [datetime.fromisoformat(printed["expires_at"])]


@pytest.mark.parametrize("person", ["mallory", "gone", "ops"])
def test_cli_refuses_a_link_for_nobody_active_or_ambiguous(people: None, person: str) -> None:
    result = herald("people", "link", person)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == f"herald: no single active person in the directory is {person!r}"
    assert rows(select(SignInToken.token_hash)) == []
