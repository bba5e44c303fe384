"""A local webhook receiver that verifies Standard Webhooks signatures: the admin platform's side, for the
tests and ``herald demo`` (``herald webhooks receive``).

Each POST is verified with the ``standardwebhooks`` package exactly as docs/webhooks.md tells a receiver to;
a bad or missing signature gets ``401`` and is recorded as refused. A verified message is recorded (in
memory, and as one JSON line in ``out`` when given) and answered with :attr:`Receiver.answer` (``204``
unless a test sets ``503`` or ``410``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

MAX_BODY_BYTES = 1 << 20


@dataclass
class Received:
    """One request: verified (``payload`` set) or refused (``error`` says why)."""

    path: str
    webhook_id: str | None
    payload: dict[str, Any] | None
    error: str | None
    answered: int


@dataclass
class Receiver:
    """A threaded HTTP receiver on 127.0.0.1; ``with Receiver(secret) as r:`` starts and stops it."""

    secret: str
    port: int = 0
    out: Path | None = None
    answer: int = 204  # what a verified message gets (a test sets 503 for "down", 410 for "gone")
    received: list[Received] = field(default_factory=list)
    on_receive: Callable[[Received], None] | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def verified(self) -> list[dict[str, Any]]:
        """The payloads of the verified messages, in the order they arrived."""
        with self._lock:
            return [r.payload for r in self.received if r.payload is not None]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(min(length, MAX_BODY_BYTES))
                code = receiver.handle(self.path, body, {k: v for k, v in self.headers.items()})
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """Verify one request, record it, and return the status to answer."""
        webhook_id = {k.lower(): v for k, v in headers.items()}.get("webhook-id")
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except Exception as exc:  # noqa: BLE001 - any failure to verify (a malformed header too) is a 401
            item = Received(path, webhook_id, None, f"{type(exc).__name__}: {exc}", 401)
        else:
            item = Received(path, webhook_id, payload, None, self.answer)
        with self._lock:
            self.received.append(item)
            if self.out is not None:
                with self.out.open("a") as f:
                    f.write(json.dumps(item.__dict__, sort_keys=True) + "\n")
        if self.on_receive is not None:
            self.on_receive(item)
        return item.answered

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def endpoints(url: str, secret_ref: str, environments: list[str]) -> list[dict[str, Any]]:
    """One directory ``webhooks:`` entry per environment, every kind, pointing at a local receiver (the demo's)."""
    return [{"id": f"admin-{env}", "environment": env, "url": f"{url}/webhooks/{env}", "secret": secret_ref,
             "kinds": ["incident.*", "approval.*"]} for env in environments]
