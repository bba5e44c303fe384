"""Every channel's fake on one event loop, with a control API, in the foreground or in a thread."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from devtools.fakes import keys as fake_keys
from devtools.fakes.apns import ApnsProtocol, FakeApns, server_context
from devtools.fakes.fcm import FakeFcm
from devtools.fakes.registry import FAKES
from devtools.fakes.smtp import FakeSmtp
from devtools.fakes.state import Provider
from devtools.fakes.webpush import FakeWebPush

T = TypeVar("T")

# Ports from a base (``herald fakes serve --port BASE``): control, fcm, apns production, sandbox, webpush.
OFFSETS = {"control": 0, "fcm": 1, "apns": 2, "apns_sandbox": 3, "webpush": 4, "email": 5}


class FakeProviders:
    """The fakes of FCM, APNs (production and sandbox hosts), Web Push and SMTP, and their control API."""

    def __init__(self, folder: Path, *, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0) -> None:
        self.folder = folder
        self.host = host
        self.base_port = port
        self.keys = fake_keys.make(folder)
        self.providers = {name: Provider(name) for name in FAKES}
        for provider in self.providers.values():
            provider.switches.latency_ms = latency_ms
        self.fcm = FakeFcm(self.providers["fcm"], self.keys.fcm_public_key, fake_keys.CLIENT_EMAIL,
                           fake_keys.PROJECT_ID)
        self.apns = FakeApns(self.providers["apns"], {fake_keys.KEY_ID: self.keys.apns_public_key},
                             fake_keys.TEAM_ID)
        self.webpush = FakeWebPush(self.providers["webpush"])
        self.email = FakeSmtp(self.providers["email"])  # SMTP, not HTTP: its own listener (devtools/fakes/smtp.py)
        self.urls: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []
        # Provider hosts by listener name, so a "refused" switch can stop one and start it again.
        self._sites: dict[str, tuple[web.AppRunner, web.TCPSite]] = {}
        self._apns_servers: dict[str, asyncio.Server] = {}
        self._closed: set[str] = set()
        self._watch: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def _port(self, name: str) -> int:
        return self.base_port + OFFSETS[name] if self.base_port else 0

    async def _serve_app(self, app: web.Application, name: str) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port(name), backlog=1024)
        await site.start()
        self._runners.append(runner)
        self._sites[name] = (runner, site)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{self.host}:{port}"

    async def _apns_listener(self, name: str, port: int) -> asyncio.Server:
        assert self._loop is not None
        environment = "sandbox" if name == "apns_sandbox" else "production"
        context = server_context(str(self.keys.cert_file), str(self.keys.cert_key_file))
        server = await self._loop.create_server(functools.partial(ApnsProtocol, self.apns, environment),
                                                self.host, port, ssl=context, backlog=1024)
        self._apns_servers[name] = server
        return server

    def settle(self, timeout_s: float = 5.0) -> None:
        """Wait until every host listens, or refuses, as the "refused" switches say (tests call it)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.call(lambda: self._closed == self._refused() & (set(self._sites) | set(self._apns_servers)
                                                                    | {"email"})):
                return
            time.sleep(0.01)
        raise TimeoutError("the fakes' listeners did not follow their switches")

    def _refused(self) -> set[str]:
        return set().union(*(p.switches.refused for p in self.providers.values()))

    async def _watch_refused(self) -> None:
        """Keep each host listening or not as the "refused" switches say (checked every 20 ms)."""
        while True:
            wanted = self._refused() & (set(self._sites) | set(self._apns_servers) | {"email"}) - {"control"}
            for name in wanted - self._closed:
                await self._close_host(name)
            for name in self._closed - wanted:
                await self._open_host(name)
            await asyncio.sleep(0.02)

    async def _close_host(self, name: str) -> None:
        self._closed.add(name)
        if name == "email":
            self.email.close()
            return
        if name in self._apns_servers:
            self._apns_servers[name].close()
            environment = "sandbox" if name == "apns_sandbox" else "production"
            for protocol in list(self.apns.live):
                if protocol.environment == environment and protocol.transport is not None:
                    protocol.transport.abort()
            return
        runner, site = self._sites[name]
        await site.stop()
        for handler in list(runner.server.connections if runner.server else []):
            if handler.transport is not None:
                handler.transport.abort()

    async def _open_host(self, name: str) -> None:
        port = int(self.urls[name].rsplit(":", 1)[1])
        if name == "email":
            await self.email.serve(self.host, port)
        elif name in self._apns_servers:
            await self._apns_listener(name, port)
        else:
            runner, _ = self._sites[name]
            site = web.TCPSite(runner, self.host, port, backlog=1024)
            await site.start()
            self._sites[name] = (runner, site)
        self._closed.discard(name)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.urls["fcm"] = await self._serve_app(self.fcm.app(), "fcm")
        self.fcm.token_uri = self.urls["fcm"] + "/token"
        fake_keys.set_token_uri(self.keys, self.fcm.token_uri)
        self.urls["webpush"] = await self._serve_app(self.webpush.app(), "webpush")
        self.webpush.base_url = self.urls["webpush"]
        for name in ("apns", "apns_sandbox"):
            server = await self._apns_listener(name, self._port(name))
            self.urls[name] = f"https://{self.host}:{server.sockets[0].getsockname()[1]}"
        smtp = await self.email.serve(self.host, self._port("email"))
        self.urls["email"] = f"smtp://{self.host}:{smtp.sockets[0].getsockname()[1]}"
        self.urls["control"] = await self._serve_app(self.control_app(), "control")
        self._watch = asyncio.ensure_future(self._watch_refused())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for server in self._apns_servers.values():
            server.close()
        await self.apns.stop()  # a hung host's answers would otherwise outlive the loop
        self.email.close()
        for runner in self._runners:
            await runner.cleanup()

    def start_in_thread(self) -> FakeProviders:
        """Run the fakes on their own loop in a daemon thread (tests); returns once they listen."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="herald-fakes", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fakes did not start")
        return self

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the fakes' loop (to change state without racing a request)."""
        if self._loop is None or self._thread is None:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def reset(self) -> None:
        """Forget every switch, what was seen and the APNs token state: a clean slate between tests.

        Call it through :meth:`call` when the fakes run in a thread."""
        for provider in self.providers.values():
            provider.reset()
        self.apns.reset_switches()

    # --- what herald needs to reach them -------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment that points herald's provider channels at these fakes (one part per fake)."""
        env: dict[str, str] = {}
        for name, fake in FAKES.items():
            env[f"HERALD_{name.upper()}_BACKEND"] = "provider"
            env.update(fake.env(self))
        return env

    def write_env(self) -> Path:
        path = self.folder / "fakes.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.env().items())
                        + f"HERALD_FAKES_CONTROL_URL={self.urls['control']}\n")
        return path

    # --- control API (for a fake in another process: the demo and the benchmark) -------

    def control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/switches", self._get_switches)
        app.router.add_post("/switches/{provider}", self._set_switches)
        app.router.add_post("/apns", self._set_apns)
        app.router.add_get("/seen/{provider}", self._seen)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/webpush/subscriptions", self._subscribe)
        app.router.add_post("/reset", self._reset)
        return app

    async def _get_switches(self, _request: web.Request) -> web.Response:
        return web.json_response({n: p.switches.as_json() for n, p in self.providers.items()})

    async def _set_switches(self, request: web.Request) -> web.Response:
        provider = self.providers.get(request.match_info["provider"])
        if provider is None:
            raise web.HTTPNotFound(text="unknown provider")
        try:
            provider.switches.update(await request.json())
        except (KeyError, ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad switch: {exc}") from None
        return web.json_response(provider.switches.as_json())

    async def _set_apns(self, request: web.Request) -> web.Response:
        values: dict[str, Any] = await request.json()
        for key in ("token_max_age_s", "goaway_after", "environments", "unregistered_at_ms"):
            if key in values:
                setattr(self.apns, key, values[key])
        return web.json_response({"ok": True})

    async def _seen(self, request: web.Request) -> web.Response:
        provider = self.providers.get(request.match_info["provider"])
        if provider is None:
            raise web.HTTPNotFound(text="unknown provider")
        since = int(request.query.get("since", "0"))
        entries = provider.seen.since(since)
        return web.Response(text=json.dumps({"count": len(provider.seen), "entries": entries}, default=str),
                            content_type="application/json")

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response({n: {"requests": p.requests, "max_in_flight": p.max_in_flight,
                                      "in_flight": p.in_flight} for n, p in self.providers.items()})

    async def _subscribe(self, request: web.Request) -> web.Response:
        # ?count=N gives a list of N subscriptions (the benchmark's 10,000 browsers in one call);
        # ?key=<applicationServerKey> binds them to that VAPID key, as PushManager.subscribe() does.
        key = request.query.get("key") or None
        count = request.query.get("count")
        if count is None:
            return web.json_response(self.webpush.subscribe(key))
        return web.json_response([self.webpush.subscribe(key) for _ in range(min(int(count), 100_000))])

    async def _reset(self, _request: web.Request) -> web.Response:
        for provider in self.providers.values():
            provider.reset()
        return web.json_response({"ok": True})


async def serve_forever(folder: Path, *, host: str, port: int, latency_ms: float,
                        announce: Callable[[FakeProviders], None]) -> None:
    fakes = FakeProviders(folder, host=host, port=port, latency_ms=latency_ms)
    await fakes.start()
    announce(fakes)
    try:
        await asyncio.Event().wait()
    finally:
        await fakes.stop()
