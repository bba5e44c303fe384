"""``/v1/devices``: a signed-in person registers, lists and removes their own devices; an app backend with a key
of the ``devices`` scope does the same for the person it names (``?person=``).

Registration goes through the one check every door uses (herald/devices.py ``register``: the channel's own address
rules, a Web Push endpoint that must be public https with real keys). The token is never echoed back: a Web Push
subscription carries its encryption secret. Someone else's device, or one that does not exist, is 404 alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update

from api.auth import Owner
from api.errors import ApiError
from api.fields import MAX_ID
from herald import db
from herald import devices as _devices
from herald.audit import audit
from herald.models import Device, utcnow

router = APIRouter(tags=["devices"])

REMOVED = "removed by its person (API)"


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(max_length=32, description="fcm, apns or webpush (herald channels)")
    token: str | dict[str, Any] = Field(description="an FCM registration token or installation id, an APNs device "
                                                    "token (hex), or a Web Push subscription (object or JSON text)")
    token_kind: str | None = Field(default=None, max_length=16, description="fcm: token or fid")
    app: str = Field(default="default", max_length=128, description="APNs: the app (bundle id or a "
                                                                     "HERALD_APNS_TOPICS name)")
    environment: Literal["sandbox", "production"] = Field(default="production", description="APNs environment")


class DeviceOut(BaseModel):
    id: int
    channel: str
    token_kind: str
    app: str
    environment: str
    active: bool
    registered_at: datetime

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(id=device.id, channel=device.channel, token_kind=device.token_kind, app=device.app,
                   environment=device.environment, active=device.active, registered_at=device.registered_at)


@router.post("/v1/devices", status_code=201, response_model=DeviceOut, summary="Register one of my devices",
             responses={400: {"description": "an address herald refuses, with the reason"},
                        401: {"description": "not signed in"}})
def register_device(owner: Owner, device: DeviceIn) -> DeviceOut:
    with db.session() as s:
        row = _devices.register(s, person_id=owner.person, channel=device.channel, token=device.token,
                                token_kind=device.token_kind, app=device.app, environment=device.environment,
                                by="device")
        audit(s, owner.actor, "device.registered", "device", row.id, channel=row.channel, person=owner.person,
              via="api")
        return DeviceOut.of(row)


@router.get("/v1/devices", response_model=list[DeviceOut], summary="My active devices")
def list_devices(owner: Owner) -> list[DeviceOut]:
    with db.session() as s:
        rows = s.scalars(select(Device).where(Device.person_id == owner.person, Device.active.is_(True))
                         .order_by(Device.id))
        return [DeviceOut.of(row) for row in rows]


@router.delete("/v1/devices/{device_id}", status_code=204, response_class=Response,
               summary="Remove one of my devices", responses={404: {"description": "no such device of yours"}})
def remove_device(owner: Owner, device_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    with db.session() as s:
        # kept (deactivated) for the delivery history, as `herald devices remove` does; registering it revives it
        removed = s.scalar(update(Device).where(Device.id == device_id, Device.person_id == owner.person,
                                                Device.active.is_(True))
                           .values(active=False, deactivated_at=utcnow(), deactivated_reason=REMOVED)
                           .returning(Device.id))
        if removed is None:
            raise ApiError(404, f"{owner.person} has no device {device_id}")
        audit(s, owner.actor, "device.removed", "device", device_id, person=owner.person, via="api")
    return Response(status_code=204)
