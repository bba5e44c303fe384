"""The channel registry: the one list of herald's channels.

Everything that lists channels reads it: the queues, worker pools and routes (herald/lanes.py), the
deliver tasks (workers/deliver/delivery.py), device validation (herald/devices.py), the directory
file (herald/directory.py), the provider fakes (devtools/fakes), compose, the demo and the bench.

A channel outside herald registers itself through the ``herald.channels`` entry point group (its
value: a :class:`ChannelSpec`), loaded here, so that every process knows it before the queues are
derived. :func:`register` does the same from code (tests, or a module imported before
``herald.lanes``). See docs/channels.md, "Adding a channel".
"""

from __future__ import annotations

from importlib.metadata import entry_points

from herald.channels import apns, email, fcm, webpush
from herald.channels.spec import ChannelSpec

_SPECS: dict[str, ChannelSpec] = {}


class UnknownChannel(KeyError):
    """No channel of that name is registered."""


def register(spec: ChannelSpec) -> ChannelSpec:
    """Add a channel (once per name; registering the same spec again is a no-op)."""
    if _SPECS.get(spec.name, spec) is not spec:
        raise ValueError(f"a channel named {spec.name!r} is already registered")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a channel (a test's throwaway channel)."""
    _SPECS.pop(name, None)


def get(name: str) -> ChannelSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownChannel(name) from None


def names() -> tuple[str, ...]:
    """Every registered channel's name, in registration order."""
    return tuple(_SPECS)


def specs() -> tuple[ChannelSpec, ...]:
    return tuple(_SPECS.values())


def _load_plugins() -> None:
    for point in entry_points(group="herald.channels"):
        spec = point.load()
        if not isinstance(spec, ChannelSpec):
            raise TypeError(f"entry point {point.name} ({point.value}) is not a ChannelSpec")
        register(spec)


# herald's own channels: one line each.
register(fcm.SPEC)
register(apns.SPEC)
register(webpush.SPEC)
register(email.SPEC)  # the fallback channel (herald/unreached.py), and routes that name it
_load_plugins()
