"""What the HTTP/1.1 channels (FCM and Web Push) share: one pooled aiohttp session per process.

aiohttp was chosen by measurement (docs/channels.md: about 0.4 ms of CPU per request, against 2.6 ms
for httpx over HTTP/2). The session is created on the delivery loop after fork, keeps its
connections alive between batches, and never opens more than the provider's in-flight limit.
Redirects are never followed (a provider does not redirect; an endpoint that does is not one) and
no more than :data:`MAX_BODY_BYTES` of an answer is read.

A failed request is either one that never left (:func:`may_have_left` is false: resending it is
harmless) or one that may have reached the provider (``uncertain``: its resend is recorded as such).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from herald.channels.sender import ProviderChannel
from herald.settings import get_settings

MAX_BODY_BYTES = 4096  # of an answer's body: FCM's and the push services' answers are far smaller


def may_have_left(exc: BaseException) -> bool:
    """Whether a request that failed with ``exc`` may have reached the provider.

    aiohttp raises the connector errors (refused, DNS, TLS handshake) and ``ConnectionTimeoutError``
    (no connection, or no free slot in the pool, within the timeout) only before it writes a byte of
    the request; anything later (a timeout waiting for the answer, the server disconnecting, a reset)
    comes after the request was written. aiohttp never resends a POST by itself.
    """
    return not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


async def read_capped(response: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> bytes:
    """The start of an answer's body, never more than ``limit`` bytes (the rest is not read)."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


class HttpChannel(ProviderChannel):
    def __init__(self, max_in_flight: int) -> None:
        super().__init__()
        self.timeout = aiohttp.ClientTimeout(total=get_settings().channel_timeout_s)
        self.max_in_flight = max_in_flight
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_in_flight, keepalive_timeout=60,
                                             **self.connector_options())
            self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)

    def connector_options(self) -> dict[str, Any]:
        """More TCPConnector arguments for one channel (Web Push: a resolver that checks addresses)."""
        return {}

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
