"""A fake APNs: HTTP/2 over TLS (the fakes' own CA), ES256 provider tokens, Apple's reasons.

Faithful where clients break: a success is a HEADERS frame with ``:status 200``, ``apns-id`` and
END_STREAM, and no DATA frame (an ASGI server would send an empty one, which aioapns chokes on);
an error is HEADERS then one DATA frame of JSON ``{"reason": ...}`` (with ``timestamp`` for 410).
A switch sends GOAWAY after N requests on a connection, as APNs and hypercorn do. Sandbox and
production are separate listeners ("apns_sandbox" and "apns" in the switches' ``hang_s`` and
``refused``), so one can stall or be gone while the other answers.
https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hyperframe.frame
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.fakes.state import Provider

REASONS: dict[str, int] = {
    "BadCollapseId": 400, "BadDeviceToken": 400, "BadExpirationDate": 400, "BadMessageId": 400,
    "BadPriority": 400, "BadTopic": 400, "DeviceTokenNotForTopic": 400, "DuplicateHeaders": 400,
    "IdleTimeout": 400, "InvalidPushType": 400, "MissingDeviceToken": 400, "MissingTopic": 400,
    "PayloadEmpty": 400, "TopicDisallowed": 400, "BadCertificate": 403, "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403, "Forbidden": 403, "InvalidProviderToken": 403, "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403, "BadPath": 404, "MethodNotAllowed": 405, "ExpiredToken": 410,
    "Unregistered": 410, "PayloadTooLarge": 413, "TooManyProviderTokenUpdates": 429, "TooManyRequests": 429,
    "InternalServerError": 500, "ServiceUnavailable": 503, "Shutdown": 503,
}
HOSTS = {"production": "apns", "sandbox": "apns_sandbox"}  # environment -> listener name
DEVICE_PATH = "/3/device/"
PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm",
              "liveactivity", "pushtotalk"}

LINGER_S = 1.0  # how long a connection that sent GOAWAY stays open after its last answer

Answer = tuple[int, dict[str, Any]]  # status, JSON body


class FakeApns:
    """State shared by the sandbox and production listeners."""

    def __init__(self, provider: Provider, keys: dict[str, ec.EllipticCurvePublicKey], team_id: str) -> None:
        self.provider = provider
        self.keys = keys  # key id -> public key
        self.team_id = team_id
        self.reset_switches()
        self.provider_tokens: dict[str, int] = {}  # token -> requests that used it
        self.connections = 0
        self.live: set[ApnsProtocol] = set()  # open connections, dropped when their host is refused
        # answers on their way, a hung host's too (their connection may be gone): cancelled when the fakes stop
        self.answering: set[asyncio.Future[None]] = set()
        self._verified: dict[str, float] = {}

    async def stop(self) -> None:
        """Drop every connection and cancel the answers still on their way."""
        for protocol in list(self.live):
            if protocol.transport is not None:
                protocol.transport.abort()
        for answer in list(self.answering):
            answer.cancel()
        await asyncio.gather(*self.answering, return_exceptions=True)

    def reset_switches(self) -> None:
        """The APNs-only switches, as a fresh fake has them."""
        self.token_max_age_s = 3600.0  # Apple refuses provider tokens older than an hour
        self.goaway_after = 0  # requests per connection before GOAWAY (0: never)
        self.environments: dict[str, str] = {}  # token -> the only environment it is valid in
        self.unregistered_at_ms: int | None = None  # 410 timestamp (default: now)

    def check_token(self, header: str | None) -> str | None:
        """The reason a provider token is refused, or None."""
        if not header or not header.startswith("bearer "):
            return "MissingProviderToken"
        token = header[7:]
        iat = self._verified.get(token)
        if iat is None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
                key = self.keys.get(kid or "")
                if key is None:
                    return "InvalidProviderToken"
                claims = jwt.decode(token, key, algorithms=["ES256"], options={"require": ["iss", "iat"]})
            except jwt.PyJWTError:
                return "InvalidProviderToken"
            if claims["iss"] != self.team_id:
                return "InvalidProviderToken"
            iat = float(claims["iat"])
            self._verified[token] = iat
        if time.time() - iat > self.token_max_age_s:
            return "ExpiredProviderToken"
        self.provider_tokens[token] = self.provider_tokens.get(token, 0) + 1
        return None

    async def answer(self, environment: str, headers: dict[str, str], body: bytes) -> Answer:
        p = self.provider
        p.enter()
        try:
            if p.switches.latency_ms:
                await asyncio.sleep(p.switches.latency_ms / 1000)
            hang = p.switches.hang_s.get(HOSTS[environment], 0.0)
            if hang:
                await asyncio.sleep(hang)  # accepted, answered late: the client has given up by then
            status, answer = self._decide(environment, headers, body)
        finally:
            p.leave()
        token = headers.get(":path", "").rsplit("/", 1)[-1]
        text = payload = None
        if status == 200:
            try:
                payload = json.loads(body)
                text = payload["aps"]["alert"]
            except (ValueError, KeyError, TypeError):
                text = None
        p.record(token=token, status=status, reason=answer.get("reason"), environment=environment,
                 topic=headers.get("apns-topic"), push_type=headers.get("apns-push-type"),
                 priority=headers.get("apns-priority"), expiration=headers.get("apns-expiration"),
                 collapse_id=headers.get("apns-collapse-id"), alert=text, payload=payload, size=len(body),
                 provider_token=(headers.get("authorization") or "")[7:])
        return status, answer

    def _decide(self, environment: str, headers: dict[str, str], body: bytes) -> Answer:
        """APNs' answer to one request: the first check that refuses it, in APNs' order, else 200."""
        token = headers.get(":path", "")[len(DEVICE_PATH):]
        return (self._refuse_request(headers)
                or self._refuse_in_trouble()
                or _refuse_headers(headers, body)
                or self._refuse_device(environment, token)
                or (200, {}))

    def _refuse_request(self, headers: dict[str, str]) -> Answer | None:
        """The request itself: method, path, device token, provider token."""
        if headers.get(":method") != "POST":
            return 405, {"reason": "MethodNotAllowed"}
        path = headers.get(":path", "")
        if not path.startswith(DEVICE_PATH):
            return 404, {"reason": "BadPath"}
        if not path[len(DEVICE_PATH):]:
            return 400, {"reason": "MissingDeviceToken"}
        refused = self.check_token(headers.get("authorization"))
        if refused is not None:
            return 403, {"reason": refused}
        return None

    def _refuse_in_trouble(self) -> Answer | None:
        """The switches' throttling or outage."""
        trouble = self.provider.trouble()
        if trouble == "throttle":
            return 429, {"reason": "TooManyRequests"}
        if trouble is not None:
            return 503, {"reason": "ServiceUnavailable"}
        return None

    def _refuse_device(self, environment: str, token: str) -> Answer | None:
        """The device token: unregistered, valid in the other environment only, or a forced reason."""
        if token in self.provider.switches.dead_tokens:
            stamp = self.unregistered_at_ms if self.unregistered_at_ms is not None else int(time.time() * 1000)
            return 410, {"reason": "Unregistered", "timestamp": stamp}
        only = self.environments.get(token)
        if only is not None and only != environment:
            return 400, {"reason": "BadDeviceToken"}
        forced = self.provider.forced(token)
        if forced is None:
            return None
        answer: dict[str, Any] = {"reason": forced}
        if REASONS.get(forced) == 410:
            answer["timestamp"] = self.unregistered_at_ms or int(time.time() * 1000)
        return REASONS.get(forced, 400), answer


def _refuse_headers(headers: dict[str, str], body: bytes) -> Answer | None:
    """The notification's headers and payload."""
    if not headers.get("apns-topic"):
        return 400, {"reason": "MissingTopic"}
    if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
        return 400, {"reason": "InvalidPushType"}
    if headers.get("apns-priority", "10") not in ("1", "5", "10"):
        return 400, {"reason": "BadPriority"}
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return 400, {"reason": "BadCollapseId"}
    if not headers.get("apns-expiration", "0").isdigit():
        return 400, {"reason": "BadExpirationDate"}
    if not body:
        return 400, {"reason": "PayloadEmpty"}
    if len(body) > 4096:
        return 413, {"reason": "PayloadTooLarge"}
    return None


class ApnsProtocol(asyncio.Protocol):
    """One HTTP/2 connection on a listener (sandbox or production)."""

    def __init__(self, fake: FakeApns, environment: str) -> None:
        self.fake = fake
        self.environment = environment
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                         header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.handled = 0
        self.last_processed = 0
        self.going_away = False
        self.goaway_last_id = 0  # the GOAWAY's last stream id: streams up to it are still answered
        self.open_streams = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fake.connections += 1
        self.fake.live.add(self)
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = ({k: v for k, v in event.headers}, bytearray())  # type: ignore[misc]
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id in self.requests:
                    self.requests[event.stream_id][1].extend(event.data)
            elif isinstance(event, h2.events.StreamEnded):
                self.start(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated) and self.transport is not None:
                self.transport.close()
        self.flush()

    def start(self, stream_id: int) -> None:
        headers, body = self.requests.pop(stream_id, ({}, bytearray()))
        if self.going_away and stream_id > self.goaway_last_id:
            return  # above the GOAWAY's last stream id: never processed, the client resends it
        self.handled += 1
        self.last_processed = stream_id
        self.open_streams += 1
        answer = asyncio.ensure_future(self.respond(stream_id, headers, bytes(body)))
        self.fake.answering.add(answer)
        answer.add_done_callback(self.fake.answering.discard)
        if self.fake.goaway_after and not self.going_away and self.handled >= self.fake.goaway_after:
            # A graceful GOAWAY (RFC 9113 section 6.8), as APNs sends: the streams up to this one are
            # still answered, the later ones never processed. h2's close_connection() would refuse to
            # send those answers (its state is CLOSED after a GOAWAY), so the frame is written as is.
            # (A stream below it may still be arriving: streams end out of order. It is answered too.)
            self.going_away, self.goaway_last_id = True, stream_id
            self.flush()
            goaway = hyperframe.frame.GoAwayFrame(0)
            goaway.last_stream_id = stream_id
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(goaway.serialize())

    async def respond(self, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        try:
            status, answer = await self.fake.answer(self.environment, headers, body)
            response = [(":status", str(status)), ("apns-id", headers.get("apns-id") or str(uuid.uuid4()))]
            if status == 200:
                # HEADERS only, END_STREAM on it: no DATA frame at all.
                self.conn.send_headers(stream_id, response, end_stream=True)
            else:
                data = json.dumps(answer).encode()
                self.conn.send_headers(stream_id, [*response, ("content-type", "application/json"),
                                                   ("content-length", str(len(data)))])
                self.conn.send_data(stream_id, data, end_stream=True)
            self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.open_streams -= 1
            if (self.going_away and self.open_streams == 0 and self.transport is not None
                    and not any(sid <= self.goaway_last_id for sid in self.requests)):
                # A lingering close, as real servers do: the client may still be writing streams it sent
                # before it read the GOAWAY; closing at once would make the kernel answer them with a TCP
                # reset, which destroys the answers still on their way to the client. The client closes
                # first once it has them; this is the backstop.
                asyncio.get_running_loop().call_later(LINGER_S, self._close_transport)

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fake.live.discard(self)


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    return context
