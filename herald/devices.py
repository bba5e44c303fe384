"""Device addresses: what each channel accepts, checked in one place, and how a device is registered.

Each channel says how its recipients are addressed and checks an address itself (its spec's
``addressing``, herald/channels/). Every door that adds a device goes through :func:`validate`:
``producers.register_device``, the ``herald devices register`` command and the directory file
(its ``DeviceSpec``, so ``herald directory check`` reports a bad token with its line). A token ends
up in a request path (APNs), a JSON body (FCM) or is the URL herald POSTs to (Web Push), so nothing
unchecked may reach a worker.

- FCM: a registration token (URL-safe characters, bounded length) or a Firebase installation id
  (herald/channels/fcm/).
- APNs: the device token as hex (64 today; Apple allows longer ones), and an app whose apns-topic is
  known: one ``HERALD_APNS_TOPICS`` maps, or a bundle id itself (herald/channels/apns/).
- Web Push: the browser's subscription JSON, checked here (:func:`subscription`). The endpoint is
  https and its host is not loopback, private, link-local, unspecified, multicast or otherwise
  non-global; ``keys.p256dh`` is a P-256 point and ``keys.auth`` 16 bytes (RFC 8291). A hostname is
  resolved at send time and checked again (:func:`check_address`), since DNS can point anywhere.

Registration (:func:`register`) has two callers with different rights. The device's own door
(producer, CLI, API) revives a deactivated device and stamps ``device_registered_at``, the time an
APNs 410 is compared with. The directory file only keeps its bookkeeping: it never revives a device
a provider or a person deactivated, and leaves an unchanged device untouched.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import channels
from herald.errors import InvalidDevice
from herald.models import Device, Person, utcnow

APP = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
MAX_ENDPOINT_CHARS = 2048
MAX_SUBSCRIPTION_CHARS = 4096
# What herald itself writes into a deactivated device's reason when a person leaves the file:
# only such a device may come back through the directory.
PERSON_REMOVED = "person removed"


@dataclass(frozen=True)
class Address:
    """A checked device address, in the form it is stored (duplicates compare equal)."""

    channel: str
    token_kind: str
    token: str
    app: str
    environment: str


def validate(channel: str, token: Any, *, token_kind: str | None = None, app: str = "default",
             environment: str = "production") -> Address:
    """Check a device address for its channel (the channel's own check); returns it normalized or
    raises InvalidDevice."""
    try:
        addressing = channels.get(channel).addressing
    except channels.UnknownChannel:
        raise InvalidDevice(f"unknown channel {channel!r} (known: {', '.join(channels.names())})") from None
    kinds = addressing.token_kinds
    kind = token_kind or kinds[0]
    if kind not in kinds:
        raise InvalidDevice(f"a {channel} device holds a {' or '.join(kinds)}, not a {kind!r}")
    if environment not in ("sandbox", "production"):
        raise InvalidDevice(f"unknown environment {environment!r} (sandbox or production)")
    if not isinstance(app, str) or not APP.fullmatch(app):
        raise InvalidDevice("app must be 1 to 128 letters, digits, '.', '_' or '-'")
    return Address(channel, kind, addressing.check(token, kind, app), app, environment)


# --- Web Push --------------------------------------------------------------------------------


def _b64url(value: Any, name: str) -> bytes:
    if value is None:
        raise InvalidDevice(f"a Web Push subscription needs keys.{name}")
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+={0,2}", value):
        raise InvalidDevice(f"keys.{name} must be base64url text")
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise InvalidDevice(f"keys.{name} must be base64url text") from None


def subscription(value: Any, *, allow_loopback: bool | None = None) -> str:
    """A Web Push subscription (JSON text or a mapping), checked; returns its canonical JSON."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(value, str):
        if len(value) > MAX_SUBSCRIPTION_CHARS:
            raise InvalidDevice(f"a Web Push subscription is at most {MAX_SUBSCRIPTION_CHARS} characters")
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidDevice("a Web Push subscription is JSON: endpoint, keys.p256dh, keys.auth") from None
    if not isinstance(value, dict) or not isinstance(value.get("keys"), dict):
        raise InvalidDevice("a Web Push subscription needs endpoint, keys.p256dh and keys.auth")
    endpoint, keys = value.get("endpoint"), value["keys"]
    check_endpoint(endpoint, allow_loopback=allow_loopback)
    p256dh = _b64url(keys.get("p256dh"), "p256dh")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise InvalidDevice("keys.p256dh is not a P-256 public key (65 bytes, uncompressed point)") from None
    if len(_b64url(keys.get("auth"), "auth")) != 16:
        raise InvalidDevice("keys.auth must be 16 bytes (RFC 8291)")
    canonical = {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmapped(ip: IP) -> IP:
    # ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address inside.
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def address_allowed(ip: IP, *, allow_loopback: bool) -> bool:
    """A public unicast address, or loopback when the setting allows it."""
    ip = _unmapped(ip)
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


def _allow_loopback(value: bool | None) -> bool:
    if value is not None:
        return value
    from herald.channels.webpush import WebPushSettings

    return WebPushSettings.current().allow_loopback


def _ip(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _domain_name(host: str) -> bool:
    labels = host.split(".")
    return len(labels) >= 2 and re.fullmatch(r"[a-z][a-z0-9\-]*", labels[-1]) is not None and all(
        re.fullmatch(r"[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?", label) for label in labels)


def check_endpoint(endpoint: Any, *, allow_loopback: bool | None = None) -> str:
    """Refuse an endpoint herald must not POST to; returns its host. Also called at send time."""
    loopback_ok = _allow_loopback(allow_loopback)
    scheme, host = _endpoint_url(endpoint)
    ip = _ip(host)
    if _is_loopback(host, ip):
        if not loopback_ok:
            raise InvalidDevice("the endpoint points at this machine (loopback); "
                                "HERALD_WEBPUSH_ALLOW_LOOPBACK allows it for local fakes")
        return host  # http too: the local fakes speak plain HTTP
    if scheme != "https":
        raise InvalidDevice("the endpoint must be an https URL")
    if ip is not None and not address_allowed(ip, allow_loopback=loopback_ok):
        raise InvalidDevice(f"the endpoint address {host} is not public (private, link-local, multicast "
                            "or reserved)")
    return host


def _endpoint_url(endpoint: Any) -> tuple[str, str]:
    """The endpoint's scheme and host, once it is a plain http(s) URL with a host and no user name."""
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidDevice("a Web Push subscription needs an endpoint URL")
    if len(endpoint) > MAX_ENDPOINT_CHARS or any(ord(c) < 0x21 or ord(c) == 0x7F for c in endpoint):
        raise InvalidDevice("the endpoint is not a plain URL")
    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").rstrip(".")
        _ = parts.port  # reading it raises ValueError for a bad port
    except ValueError:
        raise InvalidDevice("the endpoint is not a valid URL") from None
    if parts.scheme not in ("https", "http"):
        raise InvalidDevice("the endpoint must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidDevice("the endpoint must not carry a user name or password")
    if not host:
        raise InvalidDevice("the endpoint has no host")
    return parts.scheme, host


def _is_loopback(host: str, ip: IP | None) -> bool:
    """Whether the host names this machine; refuses a host that is neither a domain name nor an IP address."""
    if ip is not None:
        return _unmapped(ip).is_loopback
    if host == "localhost" or host.endswith(".localhost"):
        return True
    if not _domain_name(host):
        # "127.1", "2130706433" or "0x7f.0.0.1" would resolve to addresses the rules below never saw.
        raise InvalidDevice(f"the endpoint host {host!r} is not a domain name or an IP address")
    return False


def check_address(address: str, *, allow_loopback: bool | None = None) -> None:
    """Send time: refuse an address a Web Push host name resolved to, unless it is public."""
    if not address_allowed(ipaddress.ip_address(address.split("%", 1)[0]),
                           allow_loopback=_allow_loopback(allow_loopback)):
        raise InvalidDevice(f"the endpoint resolves to {address}, which is not public")


# --- registration ------------------------------------------------------------------------------


def register(db: Session, *, person_id: str, channel: str, token: Any, token_kind: str | None = None,
             app: str = "default", environment: str = "production", by: Literal["device", "directory"] = "device"
             ) -> Device:
    """Register or refresh a device; duplicates collapse and a token moved to another person follows it.

    ``by="device"``: the device registered itself (producer, CLI, API): a deactivated device is
    revived and ``device_registered_at`` stamped. ``by="directory"``: the file names the device: it
    is added when new, updated when the file changed it, and never revived unless herald deactivated
    it only because its person had left the file.
    """
    address = validate(channel, token, token_kind=token_kind, app=app, environment=environment)
    now = utcnow()
    if by == "device" and db.get(Person, person_id) is None:
        raise InvalidDevice(f"unknown person {person_id!r} (load the directory first)")
    device = db.scalar(select(Device).where(Device.channel == address.channel, Device.token == address.token))
    if device is None:
        device = Device(person_id=person_id, channel=address.channel, token=address.token,
                        token_kind=address.token_kind, app=address.app, environment=address.environment,
                        registered_at=now, device_registered_at=now if by == "device" else None)
        db.add(device)
        db.flush()
        return device
    # The directory does not undo an environment herald corrected from the provider's own answer (APNs).
    corrected = channels.get(address.channel).addressing.provider_corrects_environment
    environment = device.environment if by == "directory" and corrected else address.environment
    wanted = (person_id, address.token_kind, address.app, environment)
    if (device.person_id, device.token_kind, device.app, device.environment) != wanted:
        device.person_id, device.token_kind, device.app, device.environment = wanted
        device.registered_at = now
    if by == "device":
        device.device_registered_at = device.registered_at = now
        if not device.active:
            device.active, device.deactivated_at, device.deactivated_reason = True, None, None
    elif not device.active and device.deactivated_reason == PERSON_REMOVED:
        device.active, device.deactivated_at, device.deactivated_reason = True, None, None
    db.flush()
    return device
