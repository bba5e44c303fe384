// herald's service worker (docs/actions.md, "Web Push"): shows each push with its action buttons, sends the
// token of the button pressed to POST /v1/actions, and opens the responder page at the notification otherwise.
//
// The push is the JSON herald's Web Push channel sends (herald/channels/webpush/provider.py, cleartext):
// {title, body, link, data: {event_id, notification_id, type, severity}, url, requireInteraction?, category?,
// actions?, tokens?}.
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function read(event) {
  if (!event.data) return {title: "herald", body: "Something waits for you."};
  try {
    return event.data.json();
  } catch (error) {
    return {title: "herald", body: event.data.text()};
  }
}

function pageUrl(p) {
  const n = p.data && p.data.notification_id;
  return p.url || new URL("/app/" + (n ? "#n=" + encodeURIComponent(n) : ""), self.location.origin).href;
}

async function tell(message) {
  for (const client of await self.clients.matchAll({type: "window", includeUncontrolled: true})) {
    client.postMessage(message);
  }
}

self.addEventListener("push", (event) => {
  const p = read(event);
  const n = p.data && p.data.notification_id;
  const max = (self.Notification && Notification.maxActions) || 0;
  event.waitUntil(Promise.all([
    self.registration.showNotification(p.title || "herald", {
      body: p.body || "", tag: n ? "herald-" + n : undefined, data: p, timestamp: Date.now(),
      requireInteraction: Boolean(p.requireInteraction),  // a page stays until acted on
      actions: (p.actions || []).slice(0, max),  // browsers show the first ones; the page has them all
    }),
    tell({type: "herald.push", notification_id: n}),
  ]));
});

async function open(url) {
  const target = new URL(url, self.location.origin);
  for (const client of await self.clients.matchAll({type: "window", includeUncontrolled: true})) {
    if (new URL(client.url).pathname === target.pathname && "focus" in client) {
      await client.focus();
      return client.navigate ? client.navigate(target.href) : client;
    }
  }
  return self.clients.openWindow(target.href);
}

// A button pressed: post its token; the page (when open) and a follow-up notification tell how it went.
async function answer(notification, action) {
  const p = notification.data || {};
  notification.close();
  const token = action && p.tokens && p.tokens[action];
  if (!token) return {opened: await open(pageUrl(p)) !== null};
  let status = 0;
  let reason = "herald did not answer";
  try {
    const response = await fetch(new URL("/v1/actions", pageUrl(p)), {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({token})});
    status = response.status;
    if (!response.ok) reason = ((await response.json().catch(() => ({}))).reason) || "HTTP " + status;
  } catch (error) {
    reason = "herald did not answer (" + error.message + ")";
  }
  const ok = status >= 200 && status < 300;
  const result = {type: "herald.answered", ok, status, reason: ok ? null : reason, action,
                  notification_id: p.data && p.data.notification_id};
  await tell(result);
  if (!ok) {
    if (status === 0 || status === 401) {
      await open(pageUrl(p));  // the contract: a token herald cannot verify opens the page instead
    } else {
      await self.registration.showNotification("Not applied: " + (p.title || "herald"), {
        body: reason, tag: notification.tag || undefined, data: {...p, actions: [], tokens: {}}});
    }
  }
  return result;
}

self.addEventListener("notificationclick", (event) => {
  event.waitUntil(answer(event.notification, event.action));
});

// The page (or a browser test) presses a shown notification's button: {type: "herald.press", tag, action}.
// The answer comes back on the message's port, as the click's own result.
self.addEventListener("message", (event) => {
  const m = event.data || {};
  if (m.type !== "herald.press") return;
  const port = event.ports && event.ports[0];
  event.waitUntil(self.registration.getNotifications({tag: m.tag}).then(async (shown) => {
    const result = shown.length ? await answer(shown[0], m.action || "")
      : {type: "herald.answered", ok: false, status: 0, reason: "no such notification shown"};
    if (port) port.postMessage(result);
  }));
});
