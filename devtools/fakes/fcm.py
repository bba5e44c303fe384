"""A fake FCM HTTP v1 endpoint with its OAuth token endpoint.

- ``POST /token``: the service-account JWT-bearer grant (RFC 7523), the assertion verified with
  the account's public key, and the refresh-token grant of an ``authorized_user`` file (what
  Application Default Credentials read from ``GOOGLE_APPLICATION_CREDENTIALS``), answered with an
  access token. google-auth signs the assertion with Google's token endpoint as its audience
  whatever the file's ``token_uri`` (where it posts it), so either audience is accepted;
- the metadata server's token endpoints (``GCE_METADATA_HOST`` / ``GCE_METADATA_IP`` pointed here):
  ``/`` answers the ``Metadata-Flavor: Google`` ping, ``/computeMetadata/v1/...`` the project id,
  the default service account and its access token;
- ``POST /v1/projects/{project}/messages:send``: the bearer checked, the message checked against
  the v1 schema, answered with FCM's own error bodies
  (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.fakes.state import Provider

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

# errorCode -> (HTTP status, google.rpc status, message), as FCM answers them.
ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
    "UNSPECIFIED_ERROR": (500, "UNKNOWN", "Unknown error."),
}
TOP_LEVEL = {"token", "topic", "condition", "fid", "name", "data", "notification", "android", "webpush",
             "apns", "fcm_options"}
TARGETS = ("token", "topic", "condition", "fid")
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
SCOPES = ("https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform")
# The fake's one authorized_user (an ADC file as `gcloud auth application-default login` writes it).
# Workload identity federation (an ADC `external_account` file): the subject token the fake's STS accepts.
SUBJECT_TOKEN = "fake-workload-identity-jwt"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
AUTHORIZED_USER = {"type": "authorized_user", "client_id": "herald-fake.apps.googleusercontent.com",
                   "client_secret": "fake-client-secret", "refresh_token": "1//fake-refresh-token"}
ANDROID_NOTIFICATION = {"title", "body", "icon", "color", "sound", "tag", "click_action", "channel_id",
                        "ticker", "sticky", "notification_priority", "default_sound", "default_vibrate_timings",
                        "visibility", "notification_count", "image"}
NOTIFICATION_PRIORITIES = {"PRIORITY_UNSPECIFIED", "PRIORITY_MIN", "PRIORITY_LOW", "PRIORITY_DEFAULT",
                           "PRIORITY_HIGH", "PRIORITY_MAX"}


def error(status: int, rpc_status: str, message: str, details: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": rpc_status, "details": details or []}}
    return web.json_response(body, status=status, headers=headers)


def fcm_error(code: str, headers: dict[str, str] | None = None) -> web.Response:
    status, rpc, message = ERRORS[code]
    return error(status, rpc, message, [{"@type": FCM_ERROR, "errorCode": code}], headers)


def invalid(field: str, description: str, *, token: bool = False) -> web.Response:
    message = "The registration token is not a valid FCM registration token" if token else \
        f"Invalid value at '{field}': {description}"
    return error(400, "INVALID_ARGUMENT", message, [
        {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
        {"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": description}]}])


def check_schema(message: Any) -> web.Response | None:
    """The parts of the v1 schema herald uses, checked as FCM does."""
    if not isinstance(message, dict):
        return invalid("message", "message must be an object")
    unknown = set(message) - TOP_LEVEL
    if unknown:
        name = sorted(unknown)[0]
        return error(400, "INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name "{name}" at '
                     "'message': Cannot find field.",
                     [{"@type": BAD_REQUEST, "fieldViolations": [
                         {"field": f"message.{name}", "description": f'Invalid JSON payload received. '
                                                                       f'Unknown name "{name}"'}]}])
    if sum(key in message for key in TARGETS) != 1:
        return invalid("message", "exactly one of token, topic, condition or fid is required")
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return invalid("message.data", "data values must be strings")
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or set(notification) - {"title", "body", "image"}:
        return invalid("message.notification", "unknown notification field")
    android = message.get("android", {})
    # FCM reads the enum whatever its case: firebase-admin has always sent "high" / "normal"
    if str(android.get("priority", "NORMAL")).upper() not in ("NORMAL", "HIGH"):
        return invalid("message.android.priority", "priority must be NORMAL or HIGH")
    android_notification = android.get("notification", {})
    if not isinstance(android_notification, dict) or set(android_notification) - ANDROID_NOTIFICATION:
        return invalid("message.android.notification", "unknown android notification field")
    if android_notification.get("notification_priority", "PRIORITY_UNSPECIFIED") not in NOTIFICATION_PRIORITIES:
        return invalid("message.android.notification.notification_priority", "invalid enum value")
    ttl = android.get("ttl", "0s")
    if not (isinstance(ttl, str) and ttl.endswith("s") and ttl[:-1].replace(".", "", 1).isdigit()):
        return invalid("message.android.ttl", "Illegal duration format")
    size = len(json.dumps({"notification": notification, "data": data}, separators=(",", ":")).encode())
    if size > 4096:
        return invalid("message", f"Message payload exceeds 4096 bytes ({size})")
    return None


class FakeFcm:
    def __init__(self, provider: Provider, public_key: rsa.RSAPublicKey, client_email: str,
                 project_id: str) -> None:
        self.provider = provider
        self.public_key = public_key
        self.client_email = client_email
        self.project_id = project_id
        self.token_uri = ""
        self.access_tokens: dict[str, float] = {}
        self.token_lifetime_s = 3600
        self.tokens_issued = 0
        self.grants: list[str] = []  # how each access token was obtained: jwt-bearer, refresh_token, metadata

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_post("/v1/projects/{project}/messages:send", self.send)
        app.router.add_get("/", self.metadata_ping)
        app.router.add_get("/computeMetadata/v1/{path:.*}", self.metadata)
        return app

    def authorized_user(self) -> dict[str, str]:
        """The contents of an ADC ``authorized_user`` file whose token_uri is this fake."""
        return {**AUTHORIZED_USER, "token_uri": self.token_uri}

    def external_account(self, subject_token_file: str) -> dict[str, Any]:
        """The contents of an ADC ``external_account`` file (workload identity federation, a file-sourced
        subject token) whose STS token_url is this fake. The audience names no project number, so
        google-auth asks no resource manager for the project: HERALD_FCM_PROJECT_ID names it."""
        return {"type": "external_account",
                "audience": "//iam.googleapis.com/locations/global/workloadIdentityPools/herald/providers/fake",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_url": self.token_uri,
                "credential_source": {"file": subject_token_file}}

    def _issue(self, grant: str) -> dict[str, Any]:
        access = "ya29.fake-" + secrets.token_urlsafe(24)
        self.access_tokens[access] = time.time() + self.token_lifetime_s
        self.tokens_issued += 1
        self.grants.append(grant)
        return {"access_token": access, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") == TOKEN_EXCHANGE:  # RFC 8693, as Google's STS answers it
            if form.get("subject_token") != SUBJECT_TOKEN:
                return web.json_response({"error": "invalid_grant", "error_description": "bad subject token"},
                                         status=400)
            return web.json_response({**self._issue("token-exchange"),
                                      "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
        if form.get("grant_type") == "refresh_token":
            if any(form.get(k) != AUTHORIZED_USER[k] for k in ("client_id", "client_secret", "refresh_token")):
                return web.json_response({"error": "invalid_grant", "error_description": "Bad Request"},
                                         status=400)
            return web.json_response(self._issue("refresh_token"))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(str(form.get("assertion", "")), self.public_key, algorithms=["RS256"],
                                audience=[self.token_uri, GOOGLE_TOKEN_ENDPOINT],
                                options={"require": ["iss", "aud", "iat", "exp"]})
        except jwt.PyJWTError as exc:
            return web.json_response({"error": "invalid_grant", "error_description": str(exc)}, status=400)
        scopes = str(claims.get("scope", "")).split()
        if claims["iss"] != self.client_email or not any(scope in scopes for scope in SCOPES):
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
                                     status=400)
        return web.json_response(self._issue("jwt-bearer"))

    async def metadata_ping(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403)
        return web.Response(text="computeMetadata/\n", headers={"Metadata-Flavor": "Google"})

    async def metadata(self, request: web.Request) -> web.Response:
        flavor = {"Metadata-Flavor": "Google"}
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        path = request.match_info["path"].rstrip("/")
        if path == "project/project-id":
            return web.Response(text=self.project_id, headers=flavor)
        if path in ("instance/service-accounts/default", f"instance/service-accounts/{self.client_email}"):
            return web.json_response({"aliases": ["default"], "email": self.client_email, "scopes": list(SCOPES)},
                                     headers=flavor)
        if path in ("instance/service-accounts/default/token",
                    f"instance/service-accounts/{self.client_email}/token"):
            return web.json_response(self._issue("metadata"), headers=flavor)
        return web.Response(status=404, text="not found", headers=flavor)

    async def send(self, request: web.Request) -> web.Response:
        p = self.provider
        p.enter()
        try:
            if p.switches.latency_ms:
                await asyncio.sleep(p.switches.latency_ms / 1000)
            if p.switches.hang_s.get("fcm"):
                await request.read()  # the whole request is in: what happens next is the provider's
                await asyncio.sleep(p.switches.hang_s["fcm"])  # accepted, answered late
            return await self._answer(request)
        finally:
            p.leave()

    async def _answer(self, request: web.Request) -> web.Response:
        p = self.provider
        auth = request.headers.get("Authorization", "")
        access = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or self.access_tokens.get(access, 0) < time.time():
            p.record(token=None, status=401, reason="UNAUTHENTICATED")
            return error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected "
                         "OAuth 2 access token, login cookie or other valid authentication credential.")
        if request.match_info["project"] != self.project_id:
            return error(403, "PERMISSION_DENIED", "Permission denied on resource project.")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict) or set(body) - {"message", "validate_only"}:
            return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name.")
        message = body.get("message")
        problem = check_schema(message)
        token = (message or {}).get("token") or (message or {}).get("fid") if isinstance(message, dict) else None
        trouble = p.trouble()
        retry = {"Retry-After": str(int(p.switches.retry_after_s))}
        reason = None
        if problem is not None:
            response, reason = problem, "INVALID_ARGUMENT"
        elif trouble == "throttle":
            response, reason = fcm_error("QUOTA_EXCEEDED", retry), "QUOTA_EXCEEDED"
        elif trouble is not None:
            response, reason = fcm_error("UNAVAILABLE", retry), "UNAVAILABLE"
        elif token in p.switches.dead_tokens:
            response, reason = fcm_error("UNREGISTERED"), "UNREGISTERED"
        elif (forced := p.forced(token or "")) is not None:
            reason = forced
            if forced == "INVALID_TOKEN":
                response = invalid("message.token", "Invalid registration token", token=True)
            elif forced in ("QUOTA_EXCEEDED", "UNAVAILABLE"):
                response = fcm_error(forced, retry)
            else:
                response = fcm_error(forced)
        else:
            response = web.json_response({"name": f"projects/{self.project_id}/messages/0:"
                                                  f"{time.time_ns()}%{secrets.token_hex(8)}"})
        p.record(token=token, status=response.status, reason=reason,
                 validate_only=body.get("validate_only"),
                 notification=(message or {}).get("notification") if isinstance(message, dict) else None,
                 data=(message or {}).get("data") if isinstance(message, dict) else None,
                 android=(message or {}).get("android") if isinstance(message, dict) else None,
                 kind="fid" if isinstance(message, dict) and "fid" in message else "token")
        return response
