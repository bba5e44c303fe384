"""A person's e-mail address as the device row a delivery names (``deliveries.device_id`` is a device).

herald keeps no separate table of addresses: the address is the person's ``email`` (the directory's),
stored as a device of channel ``email`` whose token is the address, created the first time herald e-mails
the person (:func:`ensure`). Such a row is like any device: a provider's "no such mailbox" deactivates it
(then herald does not e-mail that address again until the person's address changes), ``herald devices
list --channel email`` shows them. When the person's ``email`` changes, the next e-mail creates a row for
the new address and the old one is deactivated.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from herald import db
from herald.channels.email import NAME, address
from herald.errors import InvalidDevice
from herald.models import Device, Person, utcnow


def ensure(s: Session, person_ids: Iterable[str]) -> dict[str, int]:
    """The active e-mail device of each of these people who has a usable address (person -> device id).

    People without an ``email``, with one herald cannot send to, who opted out of e-mail, or whose address a
    server said does not exist (the row deactivated) are left out. Safe to run concurrently: the row is
    written with ON CONFLICT DO NOTHING on (channel, token).
    """
    ids = set(person_ids)
    if not ids:
        return {}
    wanted: dict[str, str] = {}
    for person in s.execute(select(Person.id, Person.email, Person.opted_out_channels)
                            .where(Person.id.in_(ids), Person.active, Person.email.is_not(None))):
        if NAME in (person.opted_out_channels or []):
            continue
        try:
            wanted[person.id] = address(person.email)
        except InvalidDevice:
            continue
    if not wanted:
        return {}
    now = utcnow()
    # An address the person no longer has: not used again.
    s.execute(update(Device).where(Device.channel == NAME, Device.person_id.in_(wanted), Device.active,
                                   Device.token.not_in(list(wanted.values())))
              .values(active=False, deactivated_at=now, deactivated_reason="e-mail address changed"))
    insert = pg_insert if db.is_postgres() else sqlite_insert
    s.execute(insert(Device).on_conflict_do_nothing(index_elements=["channel", "token"]),
              [{"person_id": p, "channel": NAME, "token": a, "token_kind": "token", "app": "default",
                "environment": "production", "active": True, "registered_at": now} for p, a in wanted.items()])
    found = s.execute(select(Device.id, Device.person_id, Device.token)
                      .where(Device.channel == NAME, Device.token.in_(list(wanted.values())), Device.active))
    # An address that is another person's row (two people sharing one mailbox) is theirs: left out.
    return {d.person_id: d.id for d in found if wanted.get(d.person_id) == d.token}
