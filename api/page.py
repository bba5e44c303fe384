"""The responder page at ``/app/``: what a Web Push notification and a sign-in link open.

A static page and its script, served by the API itself (same origin, so no CORS): it exchanges a sign-in link
(``#signin=...``) for a session, lists the person's open notifications (``GET /v1/me/notifications``) with every
action (browsers show only the first two on the notification itself), applies one with its token
(``POST /v1/actions``), and can subscribe the browser to Web Push (``/app/sw.js``, ``GET /v1/webpush/key``,
``POST /v1/devices``). Ids and tokens travel in the URL fragment, which never reaches a server log. The script
only ever writes text nodes, and a strict Content-Security-Policy allows no other script.
"""

from __future__ import annotations

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

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>herald: waiting for you</title>
<link rel="stylesheet" href="/app/app.css">
<script src="/app/app.js" defer></script>
</head>
<body>
<header><h1>herald</h1><button id="push" hidden>Notify me in this browser</button>
<button id="sign-out" hidden>Sign out</button></header>
<p id="status" role="status"></p>
<p id="signed-out" hidden>Open the sign-in link you were given (<code>herald people link YOU</code>) to see what waits
for you here.</p>
<ul id="list"></ul>
</body>
</html>
"""

CSS = """body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 40rem; padding: 1rem; }
header { display: flex; gap: .5rem; align-items: center; } header h1 { flex: 1; margin: 0; }
ul { list-style: none; padding: 0; } li { border: 1px solid #ccc; border-radius: .5rem; margin: .75rem 0;
padding: .75rem; } li.focus { border-color: #c60; border-width: 2px; } h2 { font-size: 1.05rem; margin: 0 0 .25rem; }
input { box-sizing: border-box; width: 100%; margin: .5rem 0; padding: .4rem; } button { margin-right: .5rem;
padding: .4rem .8rem; } #status { min-height: 1.2rem; }
"""

JS = r""""use strict";
const SESSION = "herald.session";
const TITLES = {acknowledge: "Acknowledge", resolve: "Resolve", follow_up: "Follow up", approve: "Approve",
                reject: "Reject", request_info: "Ask for info"};
const $ = (id) => document.getElementById(id);
const say = (text) => { $("status").textContent = text; };
const fragment = () => new URLSearchParams(location.hash.slice(1));

async function call(path, {method = "GET", body, auth = true} = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const session = localStorage.getItem(SESSION);
  if (auth && session) headers.Authorization = "Bearer " + session;
  const answer = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  let json = null;
  try { json = await answer.json(); } catch (e) { json = null; }
  return {ok: answer.ok, status: answer.status, body: json, reason: (json && json.reason) || String(answer.status)};
}

async function signInFromLink() {
  const link = fragment().get("signin");
  if (!link) return;
  history.replaceState(null, "", location.pathname);  // the link leaves the address bar and the history
  const answer = await call("/v1/sessions", {method: "POST", body: {link}, auth: false});
  if (answer.ok) {
    localStorage.setItem(SESSION, answer.body.token);
    say("Signed in as " + answer.body.person_id + ".");
  } else {
    say("Sign-in refused: " + answer.reason);
  }
}

function entry(item, focus) {
  const li = document.createElement("li");
  if (String(item.notification_id) === focus) li.className = "focus";
  const title = document.createElement("h2");
  title.textContent = "[" + item.environment + "] " + item.subject.title;
  const what = document.createElement("p");
  what.textContent = item.summary + " \u00b7 " + item.subject.type + " " + item.subject.id + " \u00b7 " +
                     item.subject.status;
  li.append(title, what);
  const actions = Object.entries(item.actions);
  if (actions.length === 0) return li;
  const comment = document.createElement("input");
  comment.placeholder = "Comment (optional)";
  comment.maxLength = 2000;
  const buttons = document.createElement("div");
  for (const [action, token] of actions) {
    const button = document.createElement("button");
    button.textContent = TITLES[action] || action;
    button.addEventListener("click", () => act(token, comment.value, button));
    buttons.append(button);
  }
  li.append(comment, buttons);
  return li;
}

async function load() {
  const signedIn = Boolean(localStorage.getItem(SESSION));
  $("signed-out").hidden = signedIn;
  $("sign-out").hidden = !signedIn;
  $("push").hidden = !signedIn || !("serviceWorker" in navigator && "PushManager" in window);
  if (!signedIn) { $("list").replaceChildren(); return; }
  const answer = await call("/v1/me/notifications");
  if (answer.status === 401) {
    localStorage.removeItem(SESSION);
    say("Your session ended: " + answer.reason);
    return load();
  }
  if (!answer.ok) { say("Could not load your notifications: " + answer.reason); return; }
  const focus = fragment().get("n");
  const items = answer.body.map((item) => entry(item, focus));
  if (items.length === 0) {
    const none = document.createElement("li");
    none.textContent = "Nothing waits for you.";
    items.push(none);
  }
  $("list").replaceChildren(...items);
}

async function act(token, comment, button) {
  button.disabled = true;
  const answer = await call("/v1/actions", {method: "POST", body: comment ? {token, comment} : {token}, auth: false});
  say(answer.ok ? "Done." : "Not applied: " + answer.reason);
  await load();
}

async function enablePush() {
  const key = await call("/v1/webpush/key", {auth: false});
  if (!key.ok) { say("This herald has no Web Push key: " + key.reason); return; }
  try {
    const registration = await navigator.serviceWorker.register("/app/sw.js", {scope: "/app/"});
    const subscription = await registration.pushManager.subscribe({userVisibleOnly: true,
                                                                     applicationServerKey: key.body.key});
    const device = {channel: "webpush", token: subscription.toJSON()};
    const answer = await call("/v1/devices", {method: "POST", body: device});
    say(answer.ok ? "This browser now receives your notifications." : "Not registered: " + answer.reason);
  } catch (error) {
    say("This browser did not subscribe: " + error.message);
  }
}

window.addEventListener("hashchange", load);
document.addEventListener("DOMContentLoaded", async () => {
  $("push").addEventListener("click", enablePush);
  $("sign-out").addEventListener("click", () => { localStorage.removeItem(SESSION); say("Signed out."); load(); });
  await signInFromLink();
  await load();
});
"""

# The service worker of docs/actions.md: shows a push, applies a tapped action with its token, else opens the page.
SERVICE_WORKER = r""""use strict";
self.addEventListener("push", (event) => {
  const p = event.data.json();
  event.waitUntil(self.registration.showNotification(p.title, {
    body: p.body, data: p, actions: (p.actions || []).slice(0, Notification.maxActions || 0),
  }));
});

self.addEventListener("notificationclick", (event) => {
  const p = event.notification.data;
  event.notification.close();
  const token = event.action && p.tokens && p.tokens[event.action];
  event.waitUntil(token
    ? fetch(new URL("/v1/actions", p.url), {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify({token})})
        .then((r) => (r.ok ? undefined : clients.openWindow(p.url)))
    : clients.openWindow(p.url));
});
"""


def _static(body: str, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers=_SECURITY)


@router.get("/app", include_in_schema=False)
def app_redirect() -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/", include_in_schema=False)
def page() -> Response:
    return _static(HTML, "text/html; charset=utf-8")


@router.get("/app/app.js", include_in_schema=False)
def script() -> Response:
    return _static(JS, "text/javascript; charset=utf-8")


@router.get("/app/app.css", include_in_schema=False)
def style() -> Response:
    return _static(CSS, "text/css; charset=utf-8")


@router.get("/app/sw.js", include_in_schema=False)
def service_worker() -> Response:
    return _static(SERVICE_WORKER, "text/javascript; charset=utf-8")


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
