"""What a channel declares: its :class:`ChannelSpec`, registered once (herald/channels/registry.py).

A spec says everything the rest of herald needs to know about a channel, so that nothing else lists
channels: its name (the queue ``deliver.<name>``, the task ``herald.deliver.<name>``, the device
rows' ``channel``), how a recipient is addressed, its settings (their own environment prefix,
``HERALD_<NAME>_``), its limits, its error table, and how to build its provider and dev backends.
The provider backend is built lazily, in the process that sends: a channel's client library is imported by
a deliver worker (its main process, before it forks its pool: :meth:`ChannelSpec.preload_provider`, so the
first page of each pool process does not pay the import), never by the processes that merely route or validate.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from herald.channels.sender import Rule
    from herald.channels.types import Channel

# "dev" writes JSON lines (herald/channels/dev.py); "provider" speaks the provider's own protocol.
Backend = Literal["dev", "provider"]

# How a recipient is addressed: a device's push token, a browser's Web Push subscription, or an
# address of the person (an e-mail address, a chat handle), for the channels that reach a person.
AddressKind = Literal["device_token", "subscription", "person"]


class _OlderBackendName(PydanticBaseSettingsSource):
    """``HERALD_BACKEND_<NAME>``, the backend switch's name before channels had their own prefix.

    ``HERALD_<NAME>_BACKEND`` wins when both are set.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        name = str(self.config.get("env_prefix", "")).upper().removeprefix("HERALD_").strip("_")
        environ = {key.upper(): value for key, value in os.environ.items()}
        value = environ.get(f"HERALD_BACKEND_{name}")
        return {} if value is None else {"backend": value}


class ChannelSettings(BaseSettings):
    """The settings every channel has. A channel subclasses it with ``env_prefix="HERALD_<NAME>_"``,
    adds its own fields and overrides the limits' defaults."""

    model_config = SettingsConfigDict(extra="ignore")

    # HERALD_<NAME>_BACKEND; HERALD_BACKEND_<NAME> (the older name) still works
    backend: Backend = "dev"
    max_in_flight: int = 200  # requests in flight to the provider, shared by every process (Redis)
    rate_per_s: int = 0  # requests per second to the provider, shared by every process; 0 = no limit

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _OlderBackendName(settings_cls), dotenv_settings, file_secret_settings

    @classmethod
    def current(cls) -> Self:
        """This channel's settings, read with herald's own (and forgotten with them)."""
        from herald.settings import get_settings

        return get_settings().channel(cls)


@dataclass(frozen=True)
class Addressing:
    """How a channel reaches a recipient, and how an address is checked before it is stored.

    ``check(address, token_kind, app)`` returns the address as stored on the device row (its
    ``token``), or raises :class:`herald.errors.InvalidDevice`. ``token_kinds``: what a device row
    of this channel may hold (the first is the default). ``provider_corrects_environment``: the
    provider's answer may move a device to the other environment (APNs sandbox and production), which
    the directory file then leaves as corrected.
    """

    kind: AddressKind
    token_kinds: tuple[str, ...]
    check: Callable[[Any, str, str], str]
    provider_corrects_environment: bool = False


@dataclass(frozen=True)
class Limits:
    max_in_flight: int
    rate_per_s: int


def _dev_backend(spec: ChannelSpec) -> Channel:
    from herald.channels.dev import DevChannel
    from herald.settings import get_settings

    settings = get_settings()
    return DevChannel(spec.name, settings.dev_output_path, settings.dev_delay_ms)


@dataclass(frozen=True)
class ChannelSpec:
    """One channel, as herald's registry knows it."""

    name: str  # lower case letters and digits: queue deliver.<name>, env prefix HERALD_<NAME>_
    title: str  # as people read it: "FCM", "Web Push"
    addressing: Addressing
    settings: type[ChannelSettings]
    # How provider answers map to outcomes, one row per kind of answer (herald/channels/sender.py Rule).
    errors: Mapping[str, Rule]
    # Builds the provider backend; imports the provider's client library (only then).
    provider: Callable[[], Channel]
    # Builds the dev backend (default: JSON lines, herald/channels/dev.py).
    dev: Callable[[ChannelSpec], Channel] = field(default=_dev_backend)
    # Reached only by a route that names it in ``channels`` (and as herald's fallback, herald/unreached.py):
    # a route without ``channels`` leaves it out. Email: an address is not a device a person carries.
    named_only: bool = False
    # The module the provider backend imports (its client library's): a deliver worker imports it before it
    # forks (the Web Push one took 140 ms, paid by the first page of every fresh process).
    preload: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isascii() or not self.name.isalnum() or self.name != self.name.lower():
            raise ValueError(f"a channel name is lower-case letters and digits, not {self.name!r}")
        prefix = str(self.settings.model_config.get("env_prefix", ""))
        if prefix.upper() != f"HERALD_{self.name.upper()}_":
            raise ValueError(f"{self.settings.__name__} must read HERALD_{self.name.upper()}_*, not {prefix}*")

    @property
    def task(self) -> str:
        """The Celery task that delivers this channel's batches."""
        return f"herald.deliver.{self.name}"

    @property
    def queue(self) -> str:
        """The queue (and worker pool) of this channel's deliver task."""
        return f"deliver.{self.name}"

    def current_settings(self) -> ChannelSettings:
        return self.settings.current()

    def limits(self) -> Limits:
        settings = self.current_settings()
        return Limits(settings.max_in_flight, settings.rate_per_s)

    def preload_provider(self) -> bool:
        """Import :attr:`preload` when this channel's backend is the provider; whether it did."""
        if self.preload is None or self.current_settings().backend != "provider":
            return False
        importlib.import_module(self.preload)
        return True

    def build(self) -> Channel:
        """The configured backend of this channel (``HERALD_<NAME>_BACKEND``)."""
        backend = self.current_settings().backend
        return self.provider() if backend == "provider" else self.dev(self)
