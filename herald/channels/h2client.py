"""A small HTTP/2 client over asyncio and ``h2``, for APNs.

Why not a library: ``apns2`` does not import on Python 3.10+, aioapns hard-codes Apple's hosts
and fails on an empty DATA frame after a 200, and httpx costs about 2.6 ms of CPU per HTTP/2
request here. APNs needs little: POST with a small body, many concurrent streams on a few
long-lived TLS connections, and two rules this module exists for:

- A success is HEADERS only (``:status 200`` with END_STREAM): the response is complete then.
- The server may send GOAWAY at any time (APNs does, for maintenance or after many requests).
  Streams above its ``last_stream_id`` were not processed: they fail with
  :class:`NotProcessed` and the caller resends them on a new connection, never counting a
  failure (RFC 9113 section 6.8). So does a stream reset with REFUSED_STREAM (section 8.7).
- Anything else that ends a stream after its request was sent (no answer within the timeout, the
  connection lost, another reset) is :class:`Uncertain`: the server may have processed it, so
  it is never resent here; the caller records it as an uncertain send.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

MAX_BODY_BYTES = 4096  # of an answer's body; the rest is dropped


class NotProcessed(ConnectionError):
    """The server did not process this stream (GOAWAY above it, or REFUSED_STREAM): safe to resend."""


class Uncertain(ConnectionError):
    """The request was sent and no answer came: the server may have processed it. Never resent here."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Stream:
    done: asyncio.Future[Response]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    sent: bool = False  # the whole request (END_STREAM) was handed to the connection


class _H2Connection(h2.connection.H2Connection):
    """h2's connection, reading on after a graceful GOAWAY.

    RFC 9113 section 6.8: after a GOAWAY the server still answers the streams up to its
    ``last_stream_id``. h2 4.x moves the connection to CLOSED on receiving one, and every later
    frame (those very answers) raises ProtocolError: an answered request would look unanswered,
    and be an uncertain send. herald opens no new stream on a connection going away
    (:attr:`Connection.usable`), so the connection only stays open for reading.
    """

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return result


class Connection:
    """One HTTP/2 connection: many concurrent streams, closed for new streams after GOAWAY."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext, timeout_s: float) -> None:
        self.host, self.port, self.ssl, self.timeout_s = host, port, ssl_context, timeout_s
        self.h2 = _H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.streams: dict[int, _Stream] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.window = asyncio.Event()
        self.closed = False
        self.going_away = False
        self.sent_streams = 0

    @property
    def usable(self) -> bool:
        return not self.closed and not self.going_away

    @property
    def capacity(self) -> int:
        # Until the server's SETTINGS arrive h2 assumes no limit; APNs allows about 1,000 per connection.
        limit = min(self.h2.remote_settings.max_concurrent_streams, 1000)
        return limit - len(self.streams)

    async def connect(self) -> None:
        reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl, server_hostname=self.host),
            self.timeout_s)
        self.h2.initiate_connection()
        self._flush()
        self.reader_task = asyncio.create_task(self._read(reader))

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    async def request(self, headers: list[tuple[str, str]], body: bytes) -> Response:
        if not self.usable:
            raise NotProcessed("connection is closing")
        stream_id = self.h2.get_next_available_stream_id()
        stream = _Stream(asyncio.get_running_loop().create_future())
        self.streams[stream_id] = stream
        self.sent_streams += 1
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
            stream.sent = not body
            view = memoryview(body)
            while view:
                # Flow control (RFC 9113 section 5.2): wait for WINDOW_UPDATE when the window is spent.
                allowed = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
                if allowed <= 0:
                    self._flush()
                    self.window.clear()
                    await asyncio.wait_for(self.window.wait(), self.timeout_s)
                    continue
                chunk, view = view[:allowed], view[allowed:]
                self.h2.send_data(stream_id, bytes(chunk), end_stream=not view)
                stream.sent = not view
            self._flush()
            try:
                return await asyncio.wait_for(asyncio.shield(stream.done), self.timeout_s)
            except TimeoutError:
                raise Uncertain(f"no answer within {self.timeout_s:g} s after the request was sent") from None
        except h2.exceptions.ProtocolError as exc:
            if stream.sent:
                raise Uncertain(f"connection failed after the request was sent: {exc}") from exc
            raise NotProcessed(f"stream could not be opened: {exc}") from exc
        finally:
            self.streams.pop(stream_id, None)
            if self.going_away and not self.streams and not self.closed:
                asyncio.ensure_future(self.close())

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for event in self.h2.receive_data(data):
                    self._on(event)
                self._flush()
        except (OSError, h2.exceptions.ProtocolError, ssl.SSLError):
            pass
        finally:
            self._close("connection closed before the answer")

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._on_headers(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._on_end(event)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.window.set()

    def _on_headers(self, event: h2.events.ResponseReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.headers = {k: v for k, v in event.headers}  # type: ignore[misc]
            stream.status = int(stream.headers.get(":status", "0"))

    def _on_data(self, event: h2.events.DataReceived) -> None:
        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self.streams.get(event.stream_id)
        if stream is not None and len(stream.body) < MAX_BODY_BYTES:
            # APNs answers a few dozen bytes of JSON; never hold more than this of any answer.
            stream.body += event.data[:MAX_BODY_BYTES - len(stream.body)]

    def _on_end(self, event: h2.events.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None and not stream.done.done():
            stream.done.set_result(Response(stream.status, stream.headers, bytes(stream.body)))

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None and not stream.done.done():
            # Only REFUSED_STREAM promises the request was not processed (RFC 9113 section 8.7).
            refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
            kind = NotProcessed if refused or not stream.sent else Uncertain
            stream.done.set_exception(kind(f"stream reset by the server ({event.error_code!r})"))

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        # GOAWAY: streams above last_stream_id were never processed; the rest still finish.
        self.going_away = True
        last = event.last_stream_id or 0
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last and not stream.done.done():
                stream.done.set_exception(NotProcessed("GOAWAY before this stream was processed"))

    def _close(self, reason: str) -> None:
        """Close, failing the open streams: a stream already sent may have been processed."""
        self.closed = True
        for stream in self.streams.values():
            if not stream.done.done():
                stream.done.set_exception((Uncertain if stream.sent else NotProcessed)(reason))
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()

    async def close(self) -> None:
        if not self.closed:
            try:
                self.h2.close_connection()
                self._flush()
            except h2.exceptions.ProtocolError:
                pass
            self._close("closed by herald")
        if self.reader_task is not None:
            self.reader_task.cancel()


class ConnectionPool:
    """A few connections to one host, opened lazily, replaced when they close or go away."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext, size: int, timeout_s: float) -> None:
        self.host, self.port, self.ssl, self.size, self.timeout_s = host, port, ssl_context, size, timeout_s
        self.connections: list[Connection] = []
        self.lock = asyncio.Lock()
        self.opened = 0  # connections ever opened (tests and diagnostics)

    async def connection(self) -> Connection:
        if sum(c.usable for c in self.connections) < self.size:
            async with self.lock:
                if sum(c.usable for c in self.connections) < self.size:
                    fresh = Connection(self.host, self.port, self.ssl, self.timeout_s)
                    await fresh.connect()
                    self.opened += 1
                    self.connections = [c for c in self.connections if c.usable or c.streams] + [fresh]
                    return fresh
        while True:
            best = max((c for c in self.connections if c.usable), key=lambda c: c.capacity, default=None)
            if best is None:
                return await self.connection()
            if best.capacity > 0:
                return best
            await asyncio.sleep(0.002)  # every stream slot busy: wait for one to free

    async def request(self, headers: list[tuple[str, str]], body: bytes, *, attempts: int = 10) -> Response:
        """Send on a live connection; a stream the server did not process is resent on another.

        :class:`Uncertain` (sent, no answer) is raised to the caller, never resent here.
        """
        for attempt in range(attempts):
            connection = await self.connection()
            try:
                return await connection.request(headers, body)
            except NotProcessed:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def retire(self, connection: Connection | None = None) -> None:
        """Stop using connections (APNs 500/503: retry on a fresh connection)."""
        for c in self.connections if connection is None else [connection]:
            c.going_away = True
            if not c.streams:
                asyncio.ensure_future(c.close())

    async def close(self) -> None:
        for c in self.connections:
            await c.close()
        self.connections = []
