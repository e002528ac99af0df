"""imip deliveries and refusals

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 03:58:19.442001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tmcaldav.store.model

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""

    op.create_table(
        "mail_refusals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=True),
        sa.Column("message_id", sa.String(length=300), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_refusals")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("sent_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("message_id", sa.String(length=300), nullable=True),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'failed', 'superseded')", name=op.f("ck_deliveries_state")
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_deliveries_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_deliveries_enrollment_id"), ["enrollment_id"], unique=False
        )


def downgrade() -> None:
    """Undo this revision."""

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_enrollment_id"))
        batch_op.drop_index("ix_deliveries_due")

    op.drop_table("deliveries")
    op.drop_table("mail_refusals")
