"""Who is calling: integration code with an API key, or a signed-in person. Both send ``Authorization: Bearer ...``.

An API key belongs to one environment and has one scope (herald/keys.py); a route names the scope it needs, and
a route that touches an environment's data compares it with the key's. A person presents a session token from a
sign-in link or an OIDC token (herald/signin.py) and acts only on what is their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError, unauthorized
from herald import db, keys, signin

_key_scheme = HTTPBearer(auto_error=False, scheme_name="apiKey",
                         description="An API key (`herald keys create --environment ENV --scope SCOPE`).")
_person_scheme = HTTPBearer(auto_error=False, scheme_name="signIn",
                            description="A person's session token (from a sign-in link) or an OIDC token.")

MISSING = "send Authorization: Bearer <token>"


def _presented(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise unauthorized(MISSING)
    return credentials.credentials.strip()


def key_with(scope: str) -> Callable[[HTTPAuthorizationCredentials | None], keys.KeyInfo]:
    """A dependency: the API key presented, which must have ``scope`` (401 unknown or revoked, 403 wrong scope)."""

    def dependency(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_key_scheme)]
                   ) -> keys.KeyInfo:
        presented = _presented(credentials)
        try:
            with db.session() as s:
                return keys.authenticate(s, presented, scope=scope)
        except keys.KeyRefused as exc:
            if exc.status == 401:
                raise unauthorized(exc.reason) from None
            raise ApiError(exc.status, exc.reason) from None

    dependency.__name__ = f"{scope}_key"
    return dependency


def same_environment(key: keys.KeyInfo, environment: str, what: str = "this") -> None:
    """403 unless the key belongs to ``environment`` (a dev key never publishes or answers in prod)."""
    if key.environment != environment:
        raise ApiError(403, f"the key belongs to environment {key.environment!r}; {what} is in {environment!r}")


def signed_in_person(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_person_scheme)]) -> str:
    """A dependency: the directory id of the person whose session or OIDC token was presented (401 otherwise)."""
    presented = _presented(credentials)
    try:
        with db.session() as s:
            return signin.person_for_bearer(s, presented)
    except signin.SignInRefused as exc:
        raise unauthorized(exc.reason) from None


@dataclass(frozen=True)
class DeviceOwner:
    """Whose devices a request manages (``person``), and who is asking (``actor``: the person, or ``key:<id>``)."""

    person: str
    actor: str


def device_owner(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_person_scheme)],
                 person: Annotated[str | None, Query(max_length=255, description=(
                     "with an API key of the devices scope: the directory person (id, email or alias) whose "
                     "devices to manage; a signed-in person manages only their own"))] = None) -> DeviceOwner:
    """A dependency: a signed-in person's own devices, or, for an app backend holding a key of the ``devices``
    scope, the devices of the person it names (devices serve every environment, so the key's environment
    does not limit whose devices it manages)."""
    presented = _presented(credentials)
    if not presented.startswith(f"{keys.PREFIX}_"):
        me = signed_in_person(credentials)
        if person is not None and person != me:
            raise ApiError(403, "a person manages only their own devices (an app backend uses a devices key)")
        return DeviceOwner(me, me)
    key = key_with("devices")(credentials)
    if person is None:
        raise ApiError(400, "a devices key names whose devices: ?person=ID")
    with db.session() as s:
        found = signin.resolve_identity(s, person)
    if found is None:
        raise ApiError(404, f"no person {person!r} in the directory")
    return DeviceOwner(found, f"key:{key.id}")


PublishKey = Annotated[keys.KeyInfo, Depends(key_with("publish"))]
ReadKey = Annotated[keys.KeyInfo, Depends(key_with("read"))]
PersonId = Annotated[str, Depends(signed_in_person)]
Owner = Annotated[DeviceOwner, Depends(device_owner)]
