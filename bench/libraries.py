"""The ``libraries`` scenario: each provider's own Python library against herald's sender for it.

herald posts to FCM, Web Push and APNs through its own transports (herald/channels/*/provider.py)
rather than through the providers' libraries; this scenario measures that choice instead of
quoting it. For each channel, the same N messages (same content, same TTL and collapse key) go to
the fakes at their latency, twice, each time from a fresh process of its own:

- ``fcm``: firebase-admin's ``messaging.send_each_async`` (its HTTPX client, its auth flow, a
  service-account ``Certificate`` whose token endpoint is the fake's), against herald's
  ``FcmChannel.send_one`` (aiohttp, its cached access token). firebase-admin has no setting for
  the FCM host: its messaging service's ``_fcm_url`` is pointed at the fake. The fake is plain
  HTTP/1.1, so firebase-admin's HTTPX client (``http2=True``, negotiated over TLS) runs HTTP/1.1
  here, as herald's aiohttp does everywhere; with HTTPX's default pool it keeps 20 of its at most
  100 connections alive. Its messages carry the same fields as herald's (priority normal, TTL, collapse key).
- ``webpush``: pywebpush's ``webpush_async`` (a shared aiohttp session, a loaded VAPID key: it
  signs a VAPID token on every call), against herald's ``WebPushChannel.send_one``.
- ``apns``: aioapns's ``APNs.send_notification`` (token auth, its own HTTP/2 protocol), against
  herald's ``ApnsChannel.send_one`` (herald/channels/h2client.py). aioapns connects to Apple's
  host and port, class attributes of its protocol: a subclass names the fake's, and its TLS
  context trusts the fakes' CA. Both keep the same number of HTTP/2 connections.

Both sides run under one driver: every message is sent by its own coroutine, at most
``concurrency`` of them at once (an asyncio semaphore, default 100), after an untimed warm-up of
one round (connections, tokens, imports). What is reported per side: deliveries/s, send latency,
CPU seconds per 1,000 deliveries (``time.process_time()`` of the sending process, every thread,
around the timed sends only), the fakes' CPU when known, and what the fake accepted: messages it
answered with success, counted from its own log (each message says which side sent it), never
from the client's own say-so. herald's gate and circuits (herald/channels/gate.py) are not in
this path: the fan-out scenarios measure them.

The harness calls :func:`run`; each side is ``python -m bench.libraries SIDE CHANNEL ITEMS OUT``.
Module-level imports are the standard library only, so a side's process imports its own library
and nothing of the other's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    from bench.procs import Group

CHANNELS = ("fcm", "webpush", "apns")
SIDES = ("library", "herald")
DEFAULT_CONCURRENCY = 100
APNS_CONNECTIONS = 2  # HTTP/2 connections per host, both sides (herald's HERALD_APNS_CONNECTIONS default)

# What each side is, for the report. The library's version is read by its own process.
SENDERS = {("fcm", "library"): ("firebase-admin", "messaging.send_each_async"),
           ("fcm", "herald"): ("herald", "FcmChannel.send_one"),
           ("webpush", "library"): ("pywebpush", "webpush_async"),
           ("webpush", "herald"): ("herald", "WebPushChannel.send_one"),
           ("apns", "library"): ("aioapns", "APNs.send_notification"),
           ("apns", "herald"): ("herald", "ApnsChannel.send_one")}
SUCCESS = {"fcm": 200, "webpush": 201, "apns": 200}  # the fake's answer to an accepted message

# The one notification every side sends (herald's bench payload: bench/ceiling.py).
TITLE, BODY, LINK = "New order", "Order PO-1 was submitted", "herald://events/bench"
COLLAPSE_KEY = "order_submitted:PO-1"
TTL_S = 3600
APP = "com.example.bench"  # the APNs topic and herald's app


def data(side: str, phase: str) -> dict[str, str]:
    """The data keys of each message: herald's, and which side and phase sent it (the fakes log them)."""
    return {"event_id": "bench", "type": "business.order_submitted", "severity": "info", "sender": side,
            "phase": phase}


# --- the harness side ------------------------------------------------------------------------


def _control(url: str, path: str, body: Any = None) -> Any:
    from bench.stack import control

    return control(url, path, body)


def addresses(channel: str, side: str, phase: str, count: int, subscriptions: list[dict[str, Any]]) -> list[Any]:
    """Distinct device addresses for one side and phase: FIDs, APNs tokens, or the fake's subscriptions."""
    if channel == "webpush":
        return subscriptions[:count]
    s, p = SIDES.index(side), ("timed", "warm-up").index(phase)
    if channel == "fcm":  # a Firebase installation id: 22 characters, the first c, d, e or f
        return [f"c{'LH'[s]}{'TW'[p]}{i:019d}" for i in range(count)]
    return [f"{'ab'[s]}{'cd'[p]}{i:062x}" for i in range(count)]  # an APNs device token: 64 hex digits


def sender_of(channel: str, entry: dict[str, Any]) -> tuple[str, str] | None:
    """(side, phase) of one entry of a fake's log, from the message's own data; None if unreadable."""
    try:
        if channel == "fcm":
            fields = entry["data"]
        elif channel == "apns":
            fields = entry["payload"]
        else:
            fields = json.loads(entry["text"])["data"]
        return str(fields["sender"]), str(fields["phase"])
    except (KeyError, TypeError, ValueError):
        return None


def accepted(channel: str, entries: list[dict[str, Any]], side: str) -> int:
    """How many distinct devices the fake accepted a timed message for, from ``side``."""
    return len({e.get("token") for e in entries
                if e.get("status") == SUCCESS[channel] and sender_of(channel, e) == (side, "timed")})


def run(env: dict[str, str], control_url: str, folder: Path, n: int, concurrency: int = DEFAULT_CONCURRENCY,
        latency_ms: float = 50.0, fakes: Group | None = None) -> dict[str, Any]:
    """Every channel, library then herald, each side in its own process; the figures per channel and side.

    ``env`` points herald at the running fakes (their ``fakes.env``), ``control_url`` is their control API.
    """
    warm = concurrency
    results: dict[str, dict[str, Any]] = {}
    for channel in CHANNELS:
        subscriptions: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        if channel == "webpush":
            subscriptions = {side: _subscriptions(env, control_url, n + warm) for side in SIDES}
        results[channel] = {}
        for side in SIDES:
            items = {"env": env, "timed": addresses(channel, side, "timed", n, subscriptions[side]),
                     "warm": addresses(channel, side, "warm-up", warm, subscriptions[side][n:])}
            results[channel][side] = _run_side(channel, side, items, env, control_url, folder, concurrency, fakes)
            print(f"libraries: {channel} {side}: {summary(results[channel][side])}", file=sys.stderr, flush=True)
    return {"n": n, "concurrency": concurrency, "latency_ms": latency_ms, "warm_up": warm, "results": results}


def _subscriptions(env: dict[str, str], control_url: str, count: int) -> list[dict[str, Any]]:
    """Browser subscriptions from the Web Push fake, bound to the fakes' VAPID key (both sides sign with it)."""
    from herald.channels import vapid

    key = vapid.b64url(vapid.public_bytes(vapid.load(Path(env["HERALD_WEBPUSH_VAPID_KEY_FILE"]))))
    answer: list[dict[str, Any]] = _control(control_url, "/webpush/subscriptions?"
                                            + urlencode({"count": count, "key": key}), {})
    return answer


def _run_side(channel: str, side: str, items: dict[str, Any], env: dict[str, str], control_url: str, folder: Path,
              concurrency: int, fakes: Group | None) -> dict[str, Any]:
    path, out = folder / f"libraries-{channel}-{side}.json", folder / f"libraries-{channel}-{side}.out.json"
    path.write_text(json.dumps(items))
    requests0 = _control(control_url, "/stats")[channel]["requests"]
    # A clean environment: the fakes' settings and the same in-flight limit, no broker or database of herald's.
    child = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    child.update(env, PYTHONPATH=str(Path(__file__).resolve().parent.parent), HERALD_LOG_LEVEL="WARNING",
                 HERALD_FCM_MAX_IN_FLIGHT=str(concurrency), HERALD_WEBPUSH_MAX_IN_FLIGHT=str(concurrency),
                 HERALD_APNS_MAX_IN_FLIGHT=str(concurrency), HERALD_APNS_CONNECTIONS=str(APNS_CONNECTIONS))
    fakes0 = fakes.cpu_s() if fakes is not None else None
    n = len(items["timed"])
    subprocess.run([sys.executable, "-m", "bench.libraries", side, channel, str(path), str(out), "--concurrency",
                    str(concurrency)], check=True, env=child, timeout=max(120.0, n / 20))
    fakes_cpu = fakes.cpu_s() - fakes0 if fakes is not None and fakes0 is not None else None
    answered = n + len(items["warm"])  # the fakes' CPU covers the warm-up too
    answer = json.loads(out.read_text())
    entries = _seen_since(control_url, channel, requests0)
    latencies = sorted(answer["latencies_s"])
    package, call = SENDERS[(channel, side)]
    return {"sender": f"{package} {answer['version']} {call}", "n": n, "accepted": accepted(channel, entries, side),
            "client_ok": answer["ok"], "seconds": round(answer["seconds"], 3),
            "per_s": round(n / answer["seconds"], 1) if answer["seconds"] else 0.0,
            "cpu_s_per_1000": round(answer["cpu_s"] / n * 1000, 3) if n else 0.0,
            "p50_ms": round(_percentile(latencies, 0.5) * 1000), "p95_ms": round(_percentile(latencies, 0.95) * 1000),
            "fakes_cpu_s_per_1000": round(fakes_cpu / answered * 1000, 3) if fakes_cpu is not None else None}


def _seen_since(control_url: str, channel: str, requests0: int) -> list[dict[str, Any]]:
    """The fake's log entries of the requests since its counter read ``requests0`` (one entry per request).

    Counted from the end of the log: it is bounded (devtools/fakes/state.py), so an offset from its start
    would drift once a long benchmark has filled it."""
    new = _control(control_url, "/stats")[channel]["requests"] - requests0
    entries: list[dict[str, Any]] = _control(control_url, f"/seen/{channel}?since={-new}")["entries"] if new else []
    return entries


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def failed(record: dict[str, Any]) -> list[str]:
    """The sides whose messages the fake did not all accept (correctness: accepted == N)."""
    return [f"{channel} {side}" for channel, sides in record["results"].items() for side, r in sides.items()
            if r["accepted"] != r["n"]]


def summary(r: dict[str, Any]) -> str:
    return (f"{r['sender']}: {r['per_s']}/s, {r['cpu_s_per_1000']} CPU s/1k, "
            f"fake accepted {r['accepted']} of {r['n']}")


def markdown(record: dict[str, Any]) -> list[str]:
    """The ``libraries`` table for RESULTS.md."""
    rows = ["", f"Libraries: {record['n']:,} messages per channel and sender, {record['concurrency']} in flight, "
                f"fakes at {record['latency_ms']:.0f} ms, each sender in its own process after a warm-up of "
                f"{record['warm_up']} (bench/libraries.py).", "",
            "| channel | sender | deliveries/s | p50 ms | p95 ms | CPU s / 1,000 | fakes CPU s / 1,000 "
            "| accepted by the fake |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for channel, sides in record["results"].items():
        for r in sides.values():
            fakes = "-" if r["fakes_cpu_s_per_1000"] is None else r["fakes_cpu_s_per_1000"]
            rows.append(f"| {channel} | {r['sender']} | {r['per_s']:,} | {r['p50_ms']:,} | {r['p95_ms']:,} "
                        f"| {r['cpu_s_per_1000']} | {fakes} | {r['accepted']:,} of {r['n']:,} |")
    rows += ["", "| channel | library CPU / herald CPU | herald rate / library rate |", "|---|---:|---:|"]
    for channel, sides in record["results"].items():
        lib, her = sides["library"], sides["herald"]
        cpu = f"{lib['cpu_s_per_1000'] / her['cpu_s_per_1000']:.1f}x" if her["cpu_s_per_1000"] else "-"
        rate = f"{her['per_s'] / lib['per_s']:.1f}x" if lib["per_s"] else "-"
        rows.append(f"| {channel} | {cpu} | {rate} |")
    return rows


# --- the sending side (one process per channel and side) --------------------------------------

Send = Callable[[Any, str], Awaitable[bool]]  # (address, phase) -> the client says it was accepted


class Sender:
    """One side of one channel: ``open`` before the clock starts, ``send`` one message, ``close``."""

    package = "herald"

    def __init__(self, env: dict[str, str], concurrency: int) -> None:
        self.env = env
        self.concurrency = concurrency

    async def open(self) -> None:
        pass

    async def send(self, address: Any, phase: str) -> bool:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def version(self) -> str:
        return metadata.version(self.package)


class FirebaseAdmin(Sender):
    package = "firebase-admin"

    async def open(self) -> None:
        import firebase_admin
        from firebase_admin import credentials, messaging

        self.messaging = messaging
        credential = credentials.Certificate(self.env["HERALD_FCM_CREDENTIALS_FILE"])  # token_uri: the fake's
        self.app = firebase_admin.initialize_app(credential, name="bench-libraries")
        service = messaging._get_messaging_service(self.app)
        # No option names the FCM host: the service keeps the send URL in this attribute (firebase-admin 7.x).
        if not str(getattr(service, "_fcm_url", "")).startswith("https://fcm.googleapis.com/"):
            raise RuntimeError("firebase-admin's messaging service has no _fcm_url to point at the fake")
        service._fcm_url = f"{self.env['HERALD_FCM_URL'].rstrip('/')}/v1/projects/{service._project_id}/messages:send"
        await asyncio.to_thread(credential.get_access_token)  # its auth flow reuses this token (as herald's cache)

    async def send(self, address: Any, phase: str) -> bool:
        m = self.messaging
        message = m.Message(fid=address, notification=m.Notification(title=TITLE, body=BODY),
                            data={**data("library", phase), "link": LINK},
                            android=m.AndroidConfig(collapse_key=COLLAPSE_KEY, ttl=TTL_S, priority="normal",
                                                    notification=m.AndroidNotification(tag=COLLAPSE_KEY)))
        answer = await m.send_each_async([message], app=self.app)
        return bool(answer.success_count == 1)


class PyWebPush(Sender):
    package = "pywebpush"

    async def open(self) -> None:
        import aiohttp
        from py_vapid import Vapid
        from pywebpush import WebPushException, webpush_async

        self.webpush_async, self.error = webpush_async, WebPushException
        self.key = Vapid.from_file(self.env["HERALD_WEBPUSH_VAPID_KEY_FILE"])
        self.subject = self.env["HERALD_WEBPUSH_VAPID_SUBJECT"]
        # pywebpush's own way to reuse connections: one session, the same pool size as herald's.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency,
                                                                            keepalive_timeout=60))
        self.topic = _topic(COLLAPSE_KEY)

    async def send(self, address: Any, phase: str) -> bool:
        text = json.dumps({"title": TITLE, "body": BODY, "link": LINK, "data": data("library", phase)},
                          separators=(",", ":"))
        try:
            response = await self.webpush_async(address, data=text, vapid_private_key=self.key,
                                                vapid_claims={"sub": self.subject}, ttl=TTL_S, timeout=10.0,
                                                headers={"Urgency": "normal", "Topic": self.topic},
                                                aiohttp_session=self.session)
        except self.error:
            return False
        return not isinstance(response, str) and response.status in (200, 201, 202)

    async def close(self) -> None:
        await self.session.close()


class Aioapns(Sender):
    package = "aioapns"

    async def open(self) -> None:
        from aioapns import APNs, NotificationRequest, PushType
        from aioapns.connection import APNsProductionClientProtocol

        self.request, self.alert = NotificationRequest, PushType.ALERT
        url = urlsplit(self.env["HERALD_APNS_PRODUCTION_URL"])
        context = ssl.create_default_context(cafile=self.env["HERALD_APNS_CA_FILE"])
        self.client = APNs(key=Path(self.env["HERALD_APNS_KEY_FILE"]).read_text(),
                           key_id=self.env["HERALD_APNS_KEY_ID"], team_id=self.env["HERALD_APNS_TEAM_ID"], topic=APP,
                           max_connections=APNS_CONNECTIONS, ssl_context=context)
        # aioapns connects to APNS_SERVER:APNS_PORT of its protocol class (api.push.apple.com:443): the fake's here.
        self.client.pool.protocol_class = type("FakeApnsProtocol", (APNsProductionClientProtocol,),
                                               {"APNS_SERVER": url.hostname, "APNS_PORT": url.port})

    async def send(self, address: Any, phase: str) -> bool:
        message = {"aps": {"alert": {"title": TITLE, "body": BODY}}, "link": LINK, **data("library", phase)}
        result = await self.client.send_notification(self.request(
            device_token=address, message=message, time_to_live=TTL_S, priority=5, collapse_key=COLLAPSE_KEY,
            push_type=self.alert))
        return bool(result.is_successful)

    async def close(self) -> None:
        self.client.pool.close()


class Herald(Sender):
    """herald's provider channel, one ``send_one`` per message (no Celery, no database, no gate)."""

    channel_name = ""

    async def open(self) -> None:
        from herald.channels.apns.provider import ApnsChannel
        from herald.channels.fcm.provider import FcmChannel
        from herald.channels.types import Message, Payload, Target
        from herald.channels.webpush.provider import WebPushChannel

        self.types = Message, Payload, Target
        self.channel = {"fcm": FcmChannel, "webpush": WebPushChannel, "apns": ApnsChannel}[self.channel_name]()
        await self.channel.open()
        if isinstance(self.channel, FcmChannel):  # the access token, as the library's, before the clock starts
            await self.channel.access_token(await self.channel.credential(APP))
        self.index = 0

    async def send(self, address: Any, phase: str) -> bool:
        message_type, payload_type, target_type = self.types
        self.index += 1
        kind = {"fcm": "fid", "webpush": "subscription", "apns": "token"}[self.channel_name]
        target = target_type(self.index, self.index, address, kind, APP, "production", 1)
        message = message_type(target, payload_type(TITLE, BODY, LINK, data("herald", phase)), "info", COLLAPSE_KEY,
                               TTL_S)
        result, _ = await self.channel.send_one(message)
        return result.outcome == "sent"

    async def close(self) -> None:
        await self.channel.aclose()


def _topic(key: str) -> str:
    """A Web Push Topic from a collapse key (at most 32 URL-safe base64 characters), as herald makes it."""
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).rstrip(b"=").decode()[:32]


async def drive(send: Send, addresses: list[Any], phase: str, concurrency: int) -> dict[str, Any]:
    """Send to every address, at most ``concurrency`` at once; CPU and wall time around the sends only."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    ok = failures = 0

    async def one(address: Any) -> None:
        nonlocal ok, failures
        async with gate:
            started = time.perf_counter()
            try:
                sent = await send(address, phase)  # awaited first: ``ok += await ...`` would read ok before
                ok += sent
            except Exception as exc:  # noqa: BLE001 - a failed send is not counted (the fake's log decides)
                failures += 1
                if failures <= 3:
                    print(f"{phase} send failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            latencies.append(time.perf_counter() - started)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(a) for a in addresses))
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0, "ok": ok,
            "latencies_s": latencies}


async def send_all(side: str, channel: str, items: dict[str, Any], concurrency: int) -> dict[str, Any]:
    sender: Sender
    if side == "library":
        sender = {"fcm": FirebaseAdmin, "webpush": PyWebPush, "apns": Aioapns}[channel](items["env"], concurrency)
    else:
        sender = type(f"Herald{channel}", (Herald,), {"channel_name": channel})(items["env"], concurrency)
    await sender.open()
    try:
        await drive(sender.send, items["warm"], "warm-up", concurrency)
        timed = await drive(sender.send, items["timed"], "timed", concurrency)
    finally:
        await sender.close()
    return {**timed, "version": sender.version()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.libraries", description="One side of the libraries "
                                     "scenario: send ITEMS' messages, write the figures to OUT.")
    parser.add_argument("side", choices=SIDES)
    parser.add_argument("channel", choices=CHANNELS)
    parser.add_argument("items", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args(argv)
    items = json.loads(args.items.read_text())
    if args.side == "herald" and args.channel == "webpush":
        # herald gets the subscription as the device row stores it: its JSON text.
        items = {**items, "timed": [json.dumps(s) for s in items["timed"]],
                 "warm": [json.dumps(s) for s in items["warm"]]}
    result = asyncio.run(send_all(args.side, args.channel, items, args.concurrency))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
