"""The channel interface: a batch of messages in, one result per target out.

A channel never raises for one bad target: it answers with a :class:`Result` whose
``outcome`` says what herald does next (see ``workers.deliver.tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

# deferred: not attempted at all (the provider asked to wait, or its circuit opened mid-batch);
# the target goes back to pending without spending one of its attempts.
Outcome = Literal["sent", "transient", "permanent", "invalid_token", "auth", "deferred"]


@dataclass(frozen=True)
class Target:
    delivery_id: int
    device_id: int
    token: str
    token_kind: str
    app: str
    environment: str
    attempt: int
    # APNs: a 410 older than the registration must not deactivate the re-registered token.
    registered_at: datetime | None = None


@dataclass(frozen=True)
class Payload:
    title: str
    body: str
    link: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    target: Target
    payload: Payload
    severity: str
    collapse_key: str | None
    ttl_s: int


@dataclass(frozen=True)
class Result:
    delivery_id: int
    outcome: Outcome
    provider_status: str | None = None
    reason: str | None = None
    latency_ms: int | None = None
    retry_after_s: float | None = None
    # APNs: the token answered on the other host (sandbox vs production): herald corrects the device.
    environment: str | None = None


class Channel(Protocol):
    """What every channel backend implements."""

    name: str

    def send(self, messages: list[Message], *, probe: bool = False) -> list[Result]:
        """Send every message; return exactly one result per message, in any order.

        ``probe``: this batch tests a provider whose circuit was open (one failure reopens it).
        """
        ...
