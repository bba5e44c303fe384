"""The development channel: writes every message as one JSON line to a file or stdout.

Like Django's console e-mail backend, it stands in for a real provider in the demo and in
development, and it is never a silent no-op: each message is written out, with its target.
Token prefixes let a developer see each outcome herald handles:

- ``dead-...``  the provider says the token is unregistered (the device is deactivated);
- ``bad-...``   the provider rejects the message (failed, the token stays);
- ``flaky-...`` the first attempt fails transiently, the retry is accepted;
- ``down-...``  every attempt fails transiently (retries run out: dead letter).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime

from herald.channels.types import Message, Result

_lock = threading.Lock()


class DevChannel:
    def __init__(self, name: str, output: str, delay_ms: int = 0) -> None:
        self.name = name
        self.output = output
        self.delay_ms = delay_ms

    def _outcome(self, message: Message) -> Result:
        token, attempt, did = message.target.token, message.target.attempt, message.target.delivery_id
        if token.startswith("dead-"):
            return Result(did, "invalid_token", "404", "Unregistered (dev channel)")
        if token.startswith("bad-"):
            return Result(did, "permanent", "400", "InvalidPayload (dev channel)")
        if token.startswith("down-") or (token.startswith("flaky-") and attempt <= 1):
            return Result(did, "transient", "503", "Unavailable (dev channel)")
        return Result(did, "sent", "200", None)

    def send(self, messages: list[Message], *, probe: bool = False) -> list[Result]:
        results = []
        lines = []
        for message in messages:
            started = time.perf_counter()
            if self.delay_ms:
                time.sleep(self.delay_ms / 1000)
            result = self._outcome(message)
            latency = int((time.perf_counter() - started) * 1000)
            results.append(Result(**{**asdict(result), "latency_ms": latency}))
            lines.append(json.dumps({
                "at": datetime.now(UTC).isoformat(), "channel": self.name, "outcome": result.outcome,
                "delivery_id": message.target.delivery_id, "device_id": message.target.device_id,
                "app": message.target.app, "to": message.target.token[:24],
                "title": message.payload.title, "body": message.payload.body,
                "link": message.payload.link, "data": message.payload.data,
                "category": message.payload.category, "tokens": message.payload.actions,
                "url": message.payload.url,
                "severity": message.severity, "collapse_key": message.collapse_key,
                "ttl_s": message.ttl_s,
            }))
        self._write(lines)
        return results

    def _write(self, lines: list[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        with _lock:
            if self.output == "-":
                sys.stdout.write(text)
                sys.stdout.flush()
                return
            # O_APPEND: lines from several worker processes never overwrite each other.
            fd = os.open(self.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
