"""The channel interface: a batch of messages in, one result per target out.

A channel never raises for one bad target: it answers with a :class:`Result` whose
``outcome`` says what herald does next (see ``workers.deliver.delivery``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

# deferred: not attempted at all (the provider asked to wait, or its circuit opened mid-batch);
# the target goes back to pending without spending one of its attempts.
# uncertain: the request was written and no answer came (a timeout, the connection lost after
# sending): the provider may have delivered it. Retried like a transient failure, and the next
# copy is recorded as a resend of an uncertain send. A request that certainly never left
# (connection refused, DNS failure, an open circuit) is transient, never uncertain.
Outcome = Literal["sent", "transient", "uncertain", "permanent", "invalid_token", "auth", "deferred"]


@dataclass(frozen=True)
class Target:
    delivery_id: int
    device_id: int
    token: str
    token_kind: str
    app: str
    environment: str
    attempt: int
    # APNs: a 410 older than the device's own last registration leaves the token active. Only the
    # device registering itself counts (producer, CLI, API), never the directory file's bookkeeping.
    device_registered_at: datetime | None = None


@dataclass(frozen=True)
class Payload:
    title: str
    body: str
    link: str
    data: dict[str, str] = field(default_factory=dict)
    # What a tap can answer (herald/actions.py, docs/actions.md): action -> its token for this recipient,
    # in the order shown, and the category naming that set of buttons (APNs aps.category); empty: none.
    actions: dict[str, str] = field(default_factory=dict)
    category: str | None = None
    # The https page that shows this notification to its recipient (Web Push opens it); None: no page.
    url: str | None = None


@dataclass(frozen=True)
class Message:
    target: Target
    payload: Payload
    severity: str
    # Collapse id / Topic: the same for every copy of one notification (payload.collapse_key), so a
    # provider that took an uncertain send and then its resend shows the person one notification.
    collapse_key: str | None
    ttl_s: int
    # APNs thread-id (how Notification Center groups): the incident's dedup key, when there is one.
    thread_key: str | None = None


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
    # The circuit's half-open probe for its host, and the host gave no answer: recorded, but not
    # counted as one of the target's attempts (a probe tests the host, not the target).
    probe: bool = False


class Channel(Protocol):
    """What every channel backend implements."""

    name: str

    def send(self, messages: list[Message]) -> list[Result]:
        """Send every message; return exactly one result per message, in any order.

        A provider channel asks each host's circuit itself (herald/channels/sender.py).
        """
        ...
