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

from herald.settings import get_settings
from workers.deliver import apns, fcm, vapid, webpush
from workers.deliver.base import Message, Payload, Target
from workers.deliver.h2client import ConnectionPool

PAYLOAD = Payload("New order", "Order PO-1 was submitted", "herald://events/bench",
                  {"event_id": "bench", "type": "business.order_submitted", "severity": "info"})


def message(item: dict[str, Any], index: int) -> Message:
    target = Target(index, index, item["token"], item.get("kind", "token"), item.get("app", "default"),
                    item.get("environment", "production"), 1)
    return Message(target, PAYLOAD, "info", "order_submitted:PO-1", 3600)


async def run(items: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    settings = get_settings()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60),
                                    timeout=aiohttp.ClientTimeout(total=settings.channel_timeout_s))
    creds = fcm.Credentials.load(settings.fcm_credentials_file) if settings.fcm_credentials_file else None
    access = ""
    if creds is not None:
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": creds.assertion()}
        async with session.post(creds.token_uri, data=form) as response:
            access = (await response.json(content_type=None))["access_token"]
    context = ssl.create_default_context(cafile=str(settings.apns_ca_file) if settings.apns_ca_file else None)
    context.set_alpn_protocols(["h2"])
    pools = {env: ConnectionPool(urlsplit(url).hostname or "", urlsplit(url).port or 443, context,
                       settings.apns_connections, settings.channel_timeout_s)
             for env, url in (("production", settings.apns_production_url),
                              ("sandbox", settings.apns_sandbox_url))}
    token = apns.ProviderToken(Path(settings.apns_key_file).read_text(), settings.apns_key_id,
                               settings.apns_team_id, settings.apns_jwt_refresh_s) \
        if settings.apns_key_file else None
    signer = vapid.Vapid(vapid.load(settings.webpush_vapid_key_file), settings.webpush_vapid_subject) \
        if settings.webpush_vapid_key_file else None
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def send(item: dict[str, Any], index: int) -> None:
        m = message(item, index)
        async with gate:
            started = time.perf_counter()
            if item["channel"] == "fcm":
                assert creds is not None
                async with session.post(f"{settings.fcm_url}/v1/projects/{creds.project_id}/messages:send",
                                        data=fcm.encode(m), headers={"Authorization": f"Bearer {access}",
                                                                     "Content-Type": "application/json"}) as r:
                    await r.read()
                    status = r.status
            elif item["channel"] == "webpush":
                assert signer is not None
                sub = json.loads(m.target.token)
                body = vapid.encrypt(webpush.cleartext(m), sub["keys"]["p256dh"], sub["keys"]["auth"])
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
