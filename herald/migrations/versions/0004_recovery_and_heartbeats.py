"""recovery marks (events, deliveries) and worker heartbeats

Revision ID: 0004_recovery_and_heartbeats
Revises: 0003_device_registration
Hand-written. ``recovered_at`` is when the recovery sweep last re-enqueued a stalled event or batch: it
re-enqueues it again only if it stalls again past the deadline after that, not once per sweep period.
It cannot reuse ``status_at`` or ``updated_at``: those are the leases a resolve or a delivery claim
checks, and the backlog scan measures delay from them. ``worker_heartbeats`` is one row per worker
process, refreshed while it runs; ``herald status`` calls a pool with no recent row down.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import herald.models

revision = "0004_recovery_and_heartbeats"
down_revision = "0003_device_registration"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def When(name: str, nullable: bool = False) -> sa.Column:  # reads like a type
    return sa.Column(name, herald.models.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("events", When("recovered_at", nullable=True))
    op.add_column("deliveries", When("recovered_at", nullable=True))
    op.create_table(
        "worker_heartbeats",
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", Json, nullable=False),
        When("started_at"),
        When("last_seen"),
        When("stopped_at", nullable=True),
        sa.PrimaryKeyConstraint("node"),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
    op.drop_column("deliveries", "recovered_at")
    op.drop_column("events", "recovered_at")
