"""The ceiling: a bare async client sending the same requests straight to the fakes.

No Celery, no database, no gate: aiohttp (FCM, Web Push) and the small HTTP/2 client (APNs) with
the same in-flight limit as herald, the same request bodies (herald's own encoders), the same
credentials. Run as ``python -m bench.ceiling ITEMS.json OUT.json --concurrency 200`` with the
fakes' environment; it measures its own CPU (all threads) around the sends only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from herald.channels import vapid
from herald.channels.apns import ApnsSettings
from herald.channels.apns import provider as apns
from herald.channels.fcm import FcmSettings
from herald.channels.fcm import provider as fcm
from herald.channels.h2client import ConnectionPool
from herald.channels.types import Message, Payload, Target
from herald.channels.webpush import WebPushSettings
from herald.channels.webpush import provider as webpush
from herald.settings import get_settings

PAYLOAD = Payload("New order", "Order PO-1 was submitted", "herald://events/bench",
                  {"event_id": "bench", "type": "business.order_submitted", "severity": "info"})


def message(item: dict[str, Any], index: int) -> Message:
    target = Target(index, index, item["token"], item.get("kind", "token"), item.get("app", "default"),
                    item.get("environment", "production"), 1)
    return Message(target, PAYLOAD, "info", "order_submitted:PO-1", 3600)


async def run(items: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    settings = get_settings()
    fcm_settings, apns_settings = FcmSettings.current(), ApnsSettings.current()
    webpush_settings = WebPushSettings.current()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60),
                                    timeout=aiohttp.ClientTimeout(total=settings.channel_timeout_s))
    creds = fcm.Credential.load(fcm_settings.credentials_file) if fcm_settings.credentials_file else None
    access = await asyncio.to_thread(creds.refresh) if creds is not None else ""
    context = ssl.create_default_context(cafile=str(apns_settings.ca_file) if apns_settings.ca_file else None)
    context.set_alpn_protocols(["h2"])
    pools = {env: ConnectionPool(urlsplit(url).hostname or "", urlsplit(url).port or 443, context,
                       apns_settings.connections, settings.channel_timeout_s)
             for env, url in (("production", apns_settings.production_url),
                              ("sandbox", apns_settings.sandbox_url))}
    token = apns.ProviderToken(Path(apns_settings.key_file).read_text(), apns_settings.key_id,
                               apns_settings.team_id, apns_settings.jwt_refresh_s) \
        if apns_settings.key_file else None
    signer = vapid.Vapid(vapid.load(webpush_settings.vapid_key_file), webpush_settings.vapid_subject) \
        if webpush_settings.vapid_key_file else None
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def send(item: dict[str, Any], index: int) -> None:
        m = message(item, index)
        async with gate:
            started = time.perf_counter()
            if item["channel"] == "fcm":
                assert creds is not None
                async with session.post(f"{fcm_settings.url}/v1/projects/{creds.project_id}/messages:send",
                                        data=fcm.encode(m), headers={"Authorization": f"Bearer {access}",
                                                                     "Content-Type": "application/json"}) as r:
                    await r.read()
                    status = r.status
            elif item["channel"] == "webpush":
                assert signer is not None
                sub = json.loads(m.target.token)
                body = vapid.encrypt(webpush.cleartext(m), sub)
                headers = {"TTL": "3600", "Content-Encoding": "aes128gcm", "Urgency": "normal",
                           "Content-Type": "application/octet-stream", "Topic": webpush.topic(m.collapse_key or ""),
                           "Authorization": signer.header(sub["endpoint"])}
                async with session.post(sub["endpoint"], data=body, headers=headers) as r:
                    await r.read()
                    status = r.status
            else:
                assert token is not None
                pool = pools[m.target.environment]
                response = await pool.request(
                    [(":method", "POST"), (":scheme", "https"), (":authority", pool.host),
                     (":path", f"/3/device/{m.target.token}"), ("authorization", f"bearer {token.current()}"),
                     ("apns-topic", m.target.app), ("apns-push-type", "alert"), ("apns-priority", "5"),
                     ("apns-expiration", str(int(time.time()) + 3600)),
                     ("apns-collapse-id", apns.collapse_id(m.collapse_key or ""))], apns.encode(m))
                status = response.status
            latencies.append(time.perf_counter() - started)
            statuses[str(status)] = statuses.get(str(status), 0) + 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(send(item, i) for i, item in enumerate(items)))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await session.close()
    for pool in pools.values():
        await pool.close()
    return {"n": len(items), "seconds": seconds, "cpu_s": cpu, "statuses": statuses,
            "latencies_s": sorted(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("items", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    items = json.loads(args.items.read_text())
    result = asyncio.run(run(items, args.concurrency))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
