"""herald's channels: the registry, the channel interface, and one subpackage per provider.

Public surface: the registry (:func:`register`, :func:`get`, :func:`names`, :func:`specs`), what a
channel declares (:class:`ChannelSpec`, :class:`ChannelSettings`, :class:`Addressing`) and what it
exchanges (:class:`Channel`, :class:`Message`, :class:`Target`, :class:`Payload`, :class:`Result`,
:data:`Outcome`). The provider modules (``herald.channels.<name>.provider``), the shared sender,
gate and transports are the channels' own business.
"""

from herald.channels.registry import UnknownChannel, get, names, register, specs, unregister
from herald.channels.spec import Addressing, AddressKind, Backend, ChannelSettings, ChannelSpec, Limits
from herald.channels.types import Channel, Message, Outcome, Payload, Result, Target

__all__ = [
    "AddressKind", "Addressing", "Backend", "Channel", "ChannelSettings", "ChannelSpec", "Limits", "Message",
    "Outcome", "Payload", "Result", "Target", "UnknownChannel", "get", "names", "register", "specs", "unregister",
]
