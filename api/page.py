"""The responder page at ``/app/``: what a Web Push notification and a sign-in link open.

Static files of api/static/ (no build step), served by the API itself (same origin, so no CORS): the page
exchanges a sign-in link (``#signin=...``) for a session, or takes an identity provider's token
(``#id_token=...``), lists the person's open notifications (``GET /v1/me/notifications``) with every action
(browsers show only the first two on the notification itself), applies one with its token (``POST /v1/actions``),
shows what the person answered (``GET /v1/me/answers``), reads the list again every few seconds, and can
subscribe the browser to Web Push (``/app/sw.js``, ``GET /v1/webpush/key``, ``POST /v1/devices``). Ids and tokens
travel in the URL fragment, which never reaches a server log. The script only ever writes text nodes, and a
strict Content-Security-Policy allows no other script.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from api.errors import ApiError

router = APIRouter(tags=["page"])

_SECURITY = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
                               "worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

STATIC = files("api") / "static"  # package data: pyproject's [tool.setuptools.package-data]

# what each path serves: the file under api/static/ and its media type
FILES = {"": ("index.html", "text/html; charset=utf-8"), "app.js": ("app.js", "text/javascript; charset=utf-8"),
         "app.css": ("app.css", "text/css; charset=utf-8"), "sw.js": ("sw.js", "text/javascript; charset=utf-8")}


@lru_cache(maxsize=len(FILES))
def asset(name: str) -> str:
    """One file of api/static/, read once per process."""
    return (STATIC / name).read_text(encoding="utf-8")


def _static(path: str) -> Response:
    name, media_type = FILES[path]
    headers = dict(_SECURITY)
    if path == "sw.js":
        headers["Service-Worker-Allowed"] = "/app/"
    return Response(asset(name), media_type=media_type, headers=headers)


@router.get("/app", include_in_schema=False)
def app_redirect() -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/", include_in_schema=False)
def page() -> Response:
    return _static("")


@router.get("/app/app.js", include_in_schema=False)
def script() -> Response:
    return _static("app.js")


@router.get("/app/app.css", include_in_schema=False)
def style() -> Response:
    return _static("app.css")


@router.get("/app/sw.js", include_in_schema=False)
def service_worker() -> Response:
    return _static("sw.js")


class WebPushKey(BaseModel):
    key: str  # the VAPID public key, base64url: PushManager.subscribe's applicationServerKey


@router.get("/v1/webpush/key", response_model=WebPushKey, tags=["devices"],
            summary="The VAPID public key a browser subscribes with",
            responses={404: {"description": "Web Push has no VAPID key here"}})
def webpush_key() -> WebPushKey:
    from herald.channels import vapid
    from herald.channels.webpush import WebPushSettings

    path = WebPushSettings.current().vapid_key_file
    if path is None:
        raise ApiError(404, "no VAPID key configured (HERALD_WEBPUSH_VAPID_KEY_FILE, `herald vapid generate`)")
    try:
        return WebPushKey(key=vapid.b64url(vapid.public_bytes(vapid.load(path))))
    except (OSError, ValueError, TypeError):
        raise ApiError(404, "the VAPID key file cannot be read") from None
