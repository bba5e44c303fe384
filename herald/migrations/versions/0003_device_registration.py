"""devices: the device's own registration time; Web Push subscriptions in one canonical form

Revision ID: 0003_device_registration
Revises: 0002_sweeps
Hand-written. ``device_registered_at`` is when the device itself last registered its token (the
producer, CLI or API door), kept apart from ``registered_at``, which the directory file also moves;
an APNs 410 is compared with it. Existing rows get NULL: who registered them is not known, and a
410 then deactivates, as APNs asks.

Web Push subscriptions were stored in two JSON spellings (the directory's and the CLI's), so the
same browser could hold two rows; they are rewritten to the one form herald/devices.py writes.
"""
import json

import sqlalchemy as sa
from alembic import op

import herald.models

revision = "0003_device_registration"
down_revision = "0002_sweeps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("device_registered_at", herald.models.UTCDateTime(timezone=True),
                                       nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, token FROM devices WHERE channel = 'webpush' ORDER BY id")).all()
    taken = {token for _, token in rows}
    for device_id, token in rows:
        try:
            sub = json.loads(str(token))
            canonical = json.dumps({"endpoint": sub["endpoint"], "keys": {"p256dh": sub["keys"]["p256dh"],
                                                                         "auth": sub["keys"]["auth"]}},
                                   sort_keys=True, separators=(",", ":"))
        except (ValueError, KeyError, TypeError):
            continue  # unusable: the sender deactivates it on first use
        if canonical != token and canonical not in taken:
            conn.execute(sa.text("UPDATE devices SET token = :t WHERE id = :i"), {"t": canonical, "i": device_id})
            taken.add(canonical)


def downgrade() -> None:
    op.drop_column("devices", "device_registered_at")
