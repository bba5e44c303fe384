"""The naive baseline: one Celery task per delivery, a synchronous send, one row written per send.

What a first version of herald would look like: the producer enqueues a task per (event, device);
the task loads the device and the event, renders the same payload, sends it with a synchronous
HTTP client (httpx; HTTP/2 for APNs as Apple requires, HTTP/1.1 keep-alive otherwise), and
records the outcome in Postgres. Started as a plain ``celery -A bench.naive worker`` with
Celery's default pool (prefork, one process per core) on the same Redis.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from celery import Celery

from herald.channels import vapid
from herald.channels.apns import ApnsSettings
from herald.channels.apns import provider as apns
from herald.channels.fcm import FcmSettings
from herald.channels.fcm import provider as fcm
from herald.channels.types import Message, Payload, Target
from herald.channels.webpush import WebPushSettings
from herald.channels.webpush import provider as webpush
from herald.payload import render
from herald.settings import get_settings

QUEUE = "bench.naive"
app = Celery("bench-naive", broker=os.environ.get("HERALD_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_transport_options={"global_keyprefix": os.environ.get("BENCH_NAIVE_PREFIX", "herald_bench_naive:")},
    task_default_queue=QUEUE, task_acks_late=True, worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True)

_state: dict[str, Any] = {}


def _conn() -> psycopg.Connection[Any]:
    if "db" not in _state:
        url = (get_settings().database_url or "").replace("postgresql+psycopg://", "postgresql://")
        _state["db"] = psycopg.connect(url)
    return _state["db"]  # type: ignore[no-any-return]


def _client(channel: str) -> httpx.Client:
    key = f"http:{channel}"
    if key not in _state:
        settings = get_settings()
        if channel == "apns":
            context = ssl.create_default_context(cafile=str(ApnsSettings.current().ca_file))
            _state[key] = httpx.Client(http2=True, verify=context, timeout=settings.channel_timeout_s)
        else:
            _state[key] = httpx.Client(timeout=settings.channel_timeout_s)
    return _state[key]  # type: ignore[no-any-return]


def _fcm_token() -> tuple[str, str]:
    if "fcm" not in _state:
        creds = fcm.Credential.load(FcmSettings.current().credentials_file)
        _state["fcm"] = (creds.project_id, creds.refresh())
    return _state["fcm"]  # type: ignore[no-any-return]


def send(m: Message, channel: str) -> int:
    if channel == "fcm":
        project, access = _fcm_token()
        url = f"{FcmSettings.current().url}/v1/projects/{project}/messages:send"
        return _client("fcm").post(url, content=fcm.encode(m),
                                   headers={"Authorization": f"Bearer {access}",
                                            "Content-Type": "application/json"}).status_code
    if channel == "webpush":
        if "vapid" not in _state:
            keys = WebPushSettings.current()
            _state["vapid"] = vapid.Vapid(vapid.load(keys.vapid_key_file),  # type: ignore[arg-type]
                                          keys.vapid_subject)
        sub = json.loads(m.target.token)
        body = vapid.encrypt(webpush.cleartext(m), sub)
        return _client("webpush").post(sub["endpoint"], content=body, headers={
            "TTL": str(m.ttl_s), "Content-Encoding": "aes128gcm", "Urgency": "normal",
            "Content-Type": "application/octet-stream",
            "Authorization": _state["vapid"].header(sub["endpoint"])}).status_code
    settings = ApnsSettings.current()
    if "apns" not in _state:
        _state["apns"] = apns.ProviderToken(Path(settings.key_file).read_text(),  # type: ignore[arg-type]
                                            settings.key_id, settings.team_id, settings.jwt_refresh_s)
    url = settings.sandbox_url if m.target.environment == "sandbox" else settings.production_url
    return _client("apns").post(f"{url}/3/device/{m.target.token}", content=apns.encode(m), headers={
        "authorization": f"bearer {_state['apns'].current()}", "apns-topic": m.target.app,
        "apns-push-type": "alert", "apns-priority": "5",
        "apns-expiration": str(int(time.time()) + m.ttl_s)}).status_code


@app.task(name="bench.naive.deliver")
def deliver(run: str, device_id: int, event_id: str) -> int:
    conn = _conn()
    row = conn.execute(
        "SELECT d.channel, d.token, d.token_kind, d.app, d.environment, e.type, e.flow, e.environment, "
        "e.severity, e.data, e.enrichment, e.dedup_key FROM devices d, events e WHERE d.id = %s AND e.id = %s",
        (device_id, event_id)).fetchone()
    assert row is not None
    channel, token, kind, app_id, device_env, etype, flow, env, severity, data, enrichment, dedup = row
    data = json.loads(data) if isinstance(data, str) else data
    enrichment = json.loads(enrichment) if isinstance(enrichment, str) else enrichment
    title, body, link, fields = render(event_id=event_id, event_type=etype, flow=flow, environment=env,
                                       severity=severity, data=data, notification_id=0, ids_only=True,
                                       enrichment=enrichment)
    m = Message(Target(0, device_id, token, kind, app_id, device_env, 1), Payload(title, body, link, fields),
                severity, dedup, 3600)
    try:
        status = send(m, channel)
    except httpx.HTTPError as exc:
        status = 0
        del exc
    conn.execute("INSERT INTO bench_naive (run, device_id, status, sent_at) VALUES (%s, %s, %s, %s)",
                 (run, device_id, status, time.time()))
    conn.commit()
    return status
