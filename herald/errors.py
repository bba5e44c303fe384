"""herald's one exception tree. Vendor errors are translated into these at the boundary."""

from __future__ import annotations


class HeraldError(Exception):
    """Base class of every error herald raises on purpose."""


class InvalidEvent(HeraldError, ValueError):
    """An event failed validation at the edge; nothing was written or sent."""


class InvalidDevice(HeraldError, ValueError):
    """A device address (token, FID, subscription) or its app was refused at registration; nothing was written."""


class DirectoryError(HeraldError, ValueError):
    """A directory file is invalid; ``problems`` lists each one with its line or field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class PublishError(HeraldError):
    """An event could not be handed to the broker."""


class BrokerUnavailable(PublishError):
    """The broker stayed unreachable through every retry; the event was not accepted."""


class PoisonMessage(HeraldError):
    """A task message that can never succeed; it goes to the dead-letter table, never retried."""


class DeliveryError(HeraldError):
    """A provider refused or failed a delivery."""

    def __init__(self, reason: str, *, provider_status: str | None = None) -> None:
        self.reason = reason
        self.provider_status = provider_status
        super().__init__(reason)


class TransientError(DeliveryError):
    """Worth retrying later, with backoff; ``retry_after_s`` is the provider's own hint."""

    def __init__(self, reason: str, *, provider_status: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(reason, provider_status=provider_status)
        self.retry_after_s = retry_after_s


class PermanentError(DeliveryError):
    """The message itself is wrong; retrying cannot help; the token stays."""


class InvalidTokenError(DeliveryError):
    """The device token or subscription is dead; the device is deactivated."""


class AuthError(DeliveryError):
    """herald's own provider credentials were refused; tokens are kept and operators alerted."""
