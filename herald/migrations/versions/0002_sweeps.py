"""sweeps: credential inventory and ledger, ops conditions, timed work, sweep runs

Revision ID: 0002_sweeps
Revises: 0001
Hand-written: the tables of the sweeps (schedules/).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import herald.models

revision = "0002_sweeps"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def When(name: str, nullable: bool = False) -> sa.Column:  # reads like a type
    return sa.Column(name, herald.models.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "credential_sources",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        When("added_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_table(
        "credentials",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("source_id", Id, nullable=True),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("fingerprint", sa.String(length=128), nullable=True),
        When("expires_at", nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("issuer", sa.Text(), nullable=True),
        sa.Column("details", Json, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        When("version_since"),
        When("seen_at"),
        sa.ForeignKeyConstraint(["source_id"], ["credential_sources.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "environment", name="uq_credentials_name_env"),
    )
    op.create_table(
        "credential_notices",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("credential_id", Id, nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("threshold_days", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        When("notified_at"),
        sa.ForeignKeyConstraint(["credential_id"], ["credentials.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id", "version", "threshold_days", name="uq_credential_notices_once"),
    )
    op.create_table(
        "ops_conditions",
        sa.Column("condition", sa.String(length=32), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("raised", sa.Boolean(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        When("raised_at", nullable=True),
        When("under_since", nullable=True),
        When("cleared_at", nullable=True),
        When("updated_at"),
        sa.PrimaryKeyConstraint("condition", "resource"),
    )
    op.create_table(
        "due_work",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("token", sa.Uuid(), nullable=False),
        When("due_at"),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        When("done_at", nullable=True),
        sa.Column("done_by", sa.String(length=128), nullable=True),
        When("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "subject", "step", "token", name="uq_due_work_step"),
    )
    op.create_index("ix_due_work_state_due", "due_work", ["state", "due_at"])
    op.create_table(
        "sweep_runs",
        sa.Column("sweep", sa.String(length=64), nullable=False),
        When("last_started_at"),
        When("last_finished_at", nullable=True),
        When("last_ok_at", nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_summary", Json, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sweep"),
    )


def downgrade() -> None:
    op.drop_table("sweep_runs")
    op.drop_index("ix_due_work_state_due", table_name="due_work")
    op.drop_table("due_work")
    op.drop_table("ops_conditions")
    op.drop_table("credential_notices")
    op.drop_table("credentials")
    op.drop_table("credential_sources")
