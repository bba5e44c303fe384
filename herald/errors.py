"""The exceptions herald raises on purpose: input refused at an edge, an event the broker did not take, a
message that can never succeed.

A provider's answer is not an exception: each channel maps it, through its error table, to a
:class:`~herald.channels.types.Result` whose ``outcome`` says what herald does next (herald/channels/).
In a task, the base task retries infrastructure errors (the database, the broker or Redis unreachable),
connection errors and timeouts, and dead-letters anything else (herald/taskbase.py).
"""

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

