"""The channel interface: a batch of messages in, one result per target out.

A channel never raises for one bad target: it answers with a :class:`Result` whose
``outcome`` says what herald does next (see ``workers.deliver.tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["sent", "transient", "permanent", "invalid_token", "auth"]


@dataclass(frozen=True)
class Target:
    delivery_id: int
    device_id: int
    token: str
    token_kind: str
    app: str
    environment: str
    attempt: int


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


class Channel(Protocol):
    """What every channel backend implements."""

    name: str

    def send(self, messages: list[Message]) -> list[Result]:
        """Send every message; return exactly one result per message, in any order."""
        ...

    def extra(self) -> dict[str, Any]:  # pragma: no cover - optional diagnostics
        ...
