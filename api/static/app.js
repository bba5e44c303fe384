// herald's responder page (api/page.py serves it at /app/): sign in, what waits for me, answer it, what I answered.
// No framework and no build: the DOM is built from text nodes only (a strict Content-Security-Policy allows no
// other script), and ids and tokens travel in the URL fragment, which never reaches a server log.
"use strict";

const SESSION = "herald.session";  // a session token (sign-in link) or an OIDC token: the bearer for /v1/me/*
const DEVICE = "herald.device";  // the id POST /v1/devices gave this browser's subscription
const POLL_MS = 15000;  // how often the list is read again while the page is visible
const SUBSCRIBE_TIMEOUT_MS = 20000;
const TITLES = {acknowledge: "Acknowledge", resolve: "Resolve", follow_up: "Follow up", approve: "Approve",
                reject: "Reject", request_info: "Ask for info"};
const DONE = {acknowledge: "acknowledged", resolve: "resolved", follow_up: "followed up", approve: "approved",
              reject: "rejected", request_info: "asked for more information on"};
const WHY = {  // what a refusal of POST /v1/actions means to the person (docs/actions.md)
  401: "This button is no longer valid (its key was retired). Reload the list and use the new one.",
  403: "You may not give this answer.",
  404: "This is gone.",
  409: "Already answered: this button was already used, or the answer no longer applies.",
  410: "Expired: this button's time to answer has passed.",
};

const $ = (id) => document.getElementById(id);
const fragment = () => new URLSearchParams(location.hash.slice(1));
let lastList = "";
let lastAnswers = "";
let timer = null;
const notes = new Map();  // notification id -> the outcome of the last answer given on this page, kept across re-renders

function say(text, kind = "info") {
  const status = $("status");
  status.textContent = text;
  status.dataset.kind = kind;
}

// el("p", {className: "x"}, "text", child): an element with properties and text or element children
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role" || key === "for") node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function call(path, {method = "GET", body, auth = true} = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const session = localStorage.getItem(SESSION);
  if (auth && session) headers.Authorization = "Bearer " + session;
  let answer;
  try {
    answer = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (error) {
    return {ok: false, status: 0, body: null, reason: "herald did not answer (" + error.message + ")"};
  }
  let json = null;
  try { json = await answer.json(); } catch (error) { json = null; }
  return {ok: answer.ok, status: answer.status, body: json,
          reason: (json && (json.reason || json.detail)) || "HTTP " + answer.status};
}

// --- time ---------------------------------------------------------------------------------------------------

const relative = new Intl.RelativeTimeFormat(undefined, {numeric: "auto"});

function ago(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return seconds > 0 ? "in under a minute" : "just now";
}

function when(iso) {
  return el("time", {dateTime: iso, title: new Date(iso).toLocaleString()}, ago(iso));
}

// --- sign-in ------------------------------------------------------------------------------------------------

function linkToken(text) {
  const value = text.trim();
  const at = value.indexOf("#");
  if (at >= 0) return new URLSearchParams(value.slice(at + 1)).get("signin") || "";
  return value;
}

async function exchange(link) {
  const answer = await call("/v1/sessions", {method: "POST", body: {link}, auth: false});
  if (answer.ok) {
    localStorage.setItem(SESSION, answer.body.token);
    say("Signed in as " + answer.body.person_id + ".", "ok");
    return true;
  }
  const used = /already used|expired/.test(answer.reason);
  say("Sign-in refused: " + answer.reason + "." + (used ? " Ask for a new link: each one works once." : ""),
      "error");
  return false;
}

async function signInFromFragment() {
  const params = fragment();
  const link = params.get("signin");
  const oidc = params.get("id_token") || params.get("access_token");  // an identity provider's redirect
  if (!link && !oidc) return;
  const keep = params.get("n");
  history.replaceState(null, "", location.pathname + (keep ? "#n=" + encodeURIComponent(keep) : ""));
  if (link) {
    await exchange(link);
  } else {
    localStorage.setItem(SESSION, oidc);
    const me = await call("/v1/me");
    if (me.ok) {
      say("Signed in with your identity provider.", "ok");
    } else {
      localStorage.removeItem(SESSION);
      say("Sign-in refused: " + me.reason + ".", "error");
    }
  }
}

function signOut(message) {
  localStorage.removeItem(SESSION);
  lastList = lastAnswers = "";
  $("list").replaceChildren();
  $("answers").replaceChildren();
  say(message);
  showSignedIn(false);
}

function showSignedIn(yes) {
  $("signed-out").hidden = yes;
  $("signed-in").hidden = !yes;
  $("sign-out").hidden = !yes;
  $("who").hidden = !yes;
  $("push").hidden = !yes || !pushSupported();
}

// --- what waits for me --------------------------------------------------------------------------------------

function chip(text, kind) {
  return el("span", {className: "chip" + (kind ? " " + kind : "")}, text);
}

function facts(item) {
  const s = item.subject;
  const list = el("dl", {className: "facts"});
  const add = (term, ...value) => list.append(el("div", {}, el("dt", {}, term), el("dd", {}, ...value)));
  if (s.type === "incident") {
    add("Assignee", s.assignee || "nobody yet");
    add("Escalation", s.escalation_step ? "step " + s.escalation_step : "not escalated");
  } else if (s.type === "approval") {
    add("Requested by", s.requester || "?");
    add("Expires", when(s.expires_at));
  }
  add("Notified", when(item.created_at));
  return list;
}

function quorum(item) {
  const s = item.subject;
  const id = "quorum-" + item.notification_id;
  const text = s.approvals + " of " + s.quorum + " approval" + (s.quorum === 1 ? "" : "s") +
               (s.rejections ? ", " + s.rejections + " rejection" + (s.rejections === 1 ? "" : "s") : "");
  const box = el("div", {className: "quorum"},
    el("label", {for: id}, "Quorum: ", el("span", {className: "quorum-text"}, text)),
    el("progress", {id, max: s.quorum, value: Math.min(s.approvals, s.quorum)}, text));
  if (s.votes && s.votes.length) {
    box.append(el("ul", {className: "votes"}, s.votes.map((v) =>
      el("li", {}, v.person_id + ": " + v.decision.replace("_", " ") + " ", when(v.at)))));
  }
  return box;
}

function entry(item, focus, comments) {
  const s = item.subject;
  const n = String(item.notification_id);
  const severity = s.severity || "info";
  const card = el("li", {className: "card " + s.type + " severity-" + severity, id: "n-" + n, tabIndex: -1,
                         dataset: {notification: n, subject: s.type + ":" + s.id,
                                   notifications: (item.notification_ids || [item.notification_id]).join(" ")}});
  if (focus && (item.notification_ids || [item.notification_id]).map(String).includes(focus)) {
    card.classList.add("focus");
    card.dataset.focus = "true";
  }
  const kind = {incident: "Incident #" + s.id, approval: "Approval #" + s.id, notice: "Notice"}[s.type] || s.type;
  card.append(
    el("div", {className: "chips"}, chip(item.environment, "env"), chip(severity, severity), chip(kind),
       s.type !== "notice" ? chip(s.status, "state") : null),
    el("h2", {id: "title-" + n}, s.title),
    el("p", {className: "summary"}, item.body || item.summary),
    facts(item));
  if (s.type === "approval") card.append(quorum(item));
  const actions = Object.entries(item.actions || {});
  if (actions.length === 0) {
    const why = s.type === "notice" ? "For your information: nothing to answer."
      : s.my_vote ? "You answered: " + (TITLES[s.my_vote] || s.my_vote) + ". Waiting for the others."
      : s.type === "approval" ? "You cannot vote on this one (your own request, or you are not one of its approvers)."
      : "Nothing for you to answer here.";
    card.append(el("p", {className: "muted"}, why));
    const note = notes.get(n);
    if (note) card.append(el("p", {className: "feedback", dataset: {kind: note.kind}}, note.text));
    return card;
  }
  const commentId = "comment-" + n;
  const comment = el("textarea", {id: commentId, name: "comment", rows: 2, maxLength: 2000,
                                  value: comments.get(n) || "", placeholder: "Why, or what you will do"});
  const note = notes.get(n);
  const feedback = el("p", {className: "feedback", id: "feedback-" + n, dataset: note ? {kind: note.kind} : {}},
                      note ? note.text : null);
  const buttons = el("div", {className: "actions", role: "group", "aria-labelledby": "title-" + n});
  for (const [action, token] of actions) {
    const done = action === "acknowledge" && s.status === "acknowledged";  // offered, but no longer the main thing
    const button = el("button", {type: "button", className: "act " + action + (done ? " done" : ""), dataset: {action}},
                      TITLES[action] || action);
    button.addEventListener("click", () => act(item, action, token, comment, buttons, feedback));
    buttons.append(button);
  }
  card.append(el("label", {for: commentId}, "Comment (optional)"), comment, buttons, feedback);
  return card;
}

async function act(item, action, token, comment, buttons, feedback) {
  for (const b of buttons.querySelectorAll("button")) b.disabled = true;
  const text = comment.value.trim();
  const answer = await call("/v1/actions", {method: "POST", body: text ? {token, comment: text} : {token},
                                            auth: false});
  const what = item.subject.title;
  if (answer.ok) {
    comment.value = "";
    const message = "Done: you " + (DONE[action] || action) + " " + what + ".";
    notes.set(String(item.notification_id), {text: message, kind: "ok"});
    say(message, "ok");
  } else {
    const message = "Not applied: " + (WHY[answer.status] || "") + " " + answer.reason + ".";
    notes.set(String(item.notification_id), {text: message, kind: "error"});
    say(message, "error");
    for (const b of buttons.querySelectorAll("button")) b.disabled = false;
  }
  feedback.textContent = notes.get(String(item.notification_id)).text;
  await refresh(true);
  // keyboard users land on the card they answered (or the list, when it left it), not at the top of the page
  const card = $("n-" + item.notification_id);
  (card || $("open")).focus();
}

// What to look at first: what asks for an answer (before what someone already acknowledged), incidents before
// approvals before notices, the worst first, the newest first.
const KINDS = {incident: 0, approval: 1, notice: 2};
const SEVERITIES = {critical: 0, error: 1, warning: 2, info: 3};

function urgency(a, b) {
  const waiting = (i) => !Object.keys(i.actions || {}).length ? 2 : i.subject.status === "acknowledged" ? 1 : 0;
  const key = (i) => [waiting(i), KINDS[i.subject.type] ?? 3,
                      SEVERITIES[i.subject.severity] ?? 4];
  const [x, y] = [key(a), key(b)];
  for (let k = 0; k < x.length; k++) if (x[k] !== y[k]) return x[k] - y[k];
  return b.created_at.localeCompare(a.created_at);
}

function answerEntry(a) {
  const title = a.subject_title || a.subject_type + " #" + a.subject_id;
  const refused = a.outcome !== "applied";
  return el("li", {className: refused ? "refused" : "applied"},
    el("p", {}, el("strong", {}, TITLES[a.action] || a.action), " \u00b7 ", title,
       a.subject_status ? " (" + a.subject_status + " now)" : ""),
    el("p", {className: "muted"}, when(a.at), " \u00b7 " + a.environment + " \u00b7 via " + a.via,
       refused ? " \u00b7 refused: " + (a.reason || "") : ""),
    a.comment ? el("p", {className: "comment"}, "\u201c" + a.comment + "\u201d") : null);
}

async function refresh(force = false) {
  if (!localStorage.getItem(SESSION)) { showSignedIn(false); return; }
  const [list, answers] = await Promise.all([call("/v1/me/notifications"), call("/v1/me/answers")]);
  if (list.status === 401) { signOut("Your session ended: " + list.reason + ". Sign in again."); return; }
  showSignedIn(true);
  if (!list.ok) { say("Could not load your notifications: " + list.reason, "error"); return; }
  $("updated").replaceChildren("Updated ", el("time", {dateTime: new Date().toISOString()},
                                                 new Date().toLocaleTimeString()));
  const listed = JSON.stringify(list.body);
  if (force || listed !== lastList) {
    lastList = listed;
    const comments = new Map([...document.querySelectorAll("#list textarea")]
      .map((t) => [t.id.replace("comment-", ""), t.value]));
    const active = document.activeElement && document.activeElement.id;
    const focus = fragment().get("n");
    const items = [...list.body].sort(urgency).map((item) => entry(item, focus, comments));
    if (items.length === 0) items.push(el("li", {className: "card empty"}, "Nothing waits for you."));
    $("list").replaceChildren(...items);
    if (active && $(active)) $(active).focus();
  }
  if (answers.ok && JSON.stringify(answers.body) !== lastAnswers) {
    lastAnswers = JSON.stringify(answers.body);
    const rows = answers.body.map(answerEntry);
    if (rows.length === 0) rows.push(el("li", {className: "muted"}, "You have not answered anything yet."));
    $("answers").replaceChildren(...rows);
  }
}

async function whoAmI() {
  const me = await call("/v1/me");
  if (me.ok) $("who").textContent = me.body.name + " (" + me.body.person_id + ")";
}

function focusFromFragment() {
  const n = fragment().get("n");
  if (!n) return;
  for (const c of document.querySelectorAll("#list .focus")) c.classList.remove("focus");
  const card = [...document.querySelectorAll("#list li.card")].find((c) =>
    c.id === "n-" + n || (c.dataset.notifications || "").split(" ").includes(n));
  if (card) {
    card.classList.add("focus");
    card.scrollIntoView({block: "center"});
    card.focus();
  } else if (localStorage.getItem(SESSION)) {
    say("That notification no longer waits for you: it was answered, resolved or has expired.");
  }
}

function poll() {
  clearInterval(timer);
  timer = setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
}

// --- Web Push -----------------------------------------------------------------------------------------------

function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

async function subscription() {
  const registration = await navigator.serviceWorker.getRegistration("/app/");
  return registration ? registration.pushManager.getSubscription() : null;
}

async function showPush() {
  if (!pushSupported()) return;
  const on = Boolean(localStorage.getItem(DEVICE)) && Boolean(await subscription());
  $("push").textContent = on ? "Turn off notifications" : "Turn on notifications";
  $("push").setAttribute("aria-pressed", String(on));
}

function within(promise, ms, what) {
  return Promise.race([promise, new Promise((_, fail) => setTimeout(() => fail(new Error(what)), ms))]);
}

async function turnOn() {
  const key = await call("/v1/webpush/key", {auth: false});
  if (!key.ok) { say("This herald sends no Web Push: " + key.reason, "error"); return; }
  if (await Notification.requestPermission() !== "granted") {
    say("Notifications are blocked for this page: allow them in the browser's site settings.", "error");
    return;
  }
  try {
    const registration = await navigator.serviceWorker.register("/app/sw.js", {scope: "/app/"});
    await navigator.serviceWorker.ready;
    const subscribed = await within(registration.pushManager.subscribe(
      {userVisibleOnly: true, applicationServerKey: key.body.key}), SUBSCRIBE_TIMEOUT_MS,
      "the browser's push service did not answer");
    const answer = await call("/v1/devices", {method: "POST", body: {channel: "webpush", token: subscribed.toJSON()}});
    if (!answer.ok) { say("Not registered: " + answer.reason, "error"); await subscribed.unsubscribe(); return; }
    localStorage.setItem(DEVICE, String(answer.body.id));
    say("This browser now receives your notifications.", "ok");
  } catch (error) {
    say("This browser did not subscribe: " + error.message, "error");
  }
}

async function turnOff() {
  const device = localStorage.getItem(DEVICE);
  if (device) {
    const answer = await call("/v1/devices/" + encodeURIComponent(device), {method: "DELETE"});
    if (!answer.ok && answer.status !== 404) { say("Not removed: " + answer.reason, "error"); return; }
    localStorage.removeItem(DEVICE);
  }
  const current = await subscription();
  if (current) await current.unsubscribe();
  say("This browser no longer receives your notifications.", "ok");
}

async function togglePush() {
  const button = $("push");
  button.disabled = true;
  try {
    if (button.getAttribute("aria-pressed") === "true") await turnOff(); else await turnOn();
  } finally {
    button.disabled = false;
    await showPush();
  }
}

// The service worker tells open pages when a push arrives or a notification's button answered.
function listenToWorker() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.addEventListener("message", (event) => {
    const m = event.data || {};
    if (m.type === "herald.answered") {
      say(m.ok ? "Done: your answer from the notification was applied."
               : "Not applied: " + (WHY[m.status] || "") + " " + m.reason + ".", m.ok ? "ok" : "error");
    }
    if (m.type === "herald.push" || m.type === "herald.answered") refresh();
  });
}

// --- start --------------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("push").addEventListener("click", togglePush);
  $("sign-out").addEventListener("click", async () => {
    // a shared browser stops receiving this person's notifications when they sign out
    if ($("push").getAttribute("aria-pressed") === "true") await turnOff();
    signOut("Signed out.");
  });
  $("refresh").addEventListener("click", () => refresh(true));
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const link = linkToken($("signin-link").value);
    if (!link) { say("Paste the whole link, or the part after #signin=.", "error"); $("signin-link").focus(); return; }
    if (await exchange(link)) { $("signin-link").value = ""; await start(); }
  });
  window.addEventListener("hashchange", async () => { await signInFromFragment(); await start(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  listenToWorker();
  await signInFromFragment();
  await start();
});

// An e-mail's action link (herald/channels/email/message.py): #n=ID&action=ACTION&token=TOKEN. Nothing is applied
// on opening the link (a mail scanner may open it too): the person confirms, with an optional comment. The token
// answers for its own person alone, once, so no session is needed.
function confirmFromFragment() {
  const params = fragment();
  const action = params.get("action");
  const token = params.get("token");
  if (!action || !token) return;
  const n = params.get("n");
  history.replaceState(null, "", location.pathname + (n ? "#n=" + encodeURIComponent(n) : ""));
  const box = $("confirm");
  $("confirm-what").textContent = (TITLES[action] || action) + (n ? " notification " + n : "") + "?";
  $("confirm-comment").value = "";
  box.hidden = false;
  $("confirm-yes").disabled = false;
  $("confirm-yes").focus();
  $("confirm-yes").onclick = async () => {
    $("confirm-yes").disabled = true;
    const text = $("confirm-comment").value.trim();
    const answer = await call("/v1/actions", {method: "POST", body: text ? {token, comment: text} : {token},
                                              auth: false});
    box.hidden = true;
    if (answer.ok) say("Done: you " + (DONE[action] || action) + (n ? " notification " + n : "") + ".", "ok");
    else say("Not applied: " + (WHY[answer.status] || "") + " " + answer.reason + ".", "error");
    await refresh(true);
  };
  $("confirm-no").onclick = () => { box.hidden = true; say("Nothing was answered."); };
}

async function start() {
  confirmFromFragment();
  await refresh(true);
  if (!localStorage.getItem(SESSION)) return;
  await whoAmI();
  await showPush();
  focusFromFragment();
  poll();
}
