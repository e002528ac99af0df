"""the administrator's verbs: reminders, notices to the administrator, scheduled
invitations (training_sessions.invite_at), answers recorded by hand
(enrollments.calendar_seen), and mail to a replaced address (deliveries.address)

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tmcaldav.store.model

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

CALENDAR_STATUSES = "'not_invited', 'invited', 'accepted', 'tentative', 'declined', 'delegated'"


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("calendar_status", sa.String(length=20), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.CheckConstraint("channel IN ('mail', 'server')", name=op.f("ck_reminders_channel")),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_reminders_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminders")),
    )
    with op.batch_alter_table("reminders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reminders_enrollment_id"), ["enrollment_id"], unique=False
        )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("plugin", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("sent_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'failed')", name=op.f("ck_notices_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
        sa.UniqueConstraint("key", name=op.f("uq_notices_key")),
    )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.create_index("ix_notices_due", ["state", "next_attempt_at"], unique=False)
    with op.batch_alter_table("training_sessions") as batch:
        batch.add_column(
            sa.Column("invite_at", tmcaldav.store.model.UTCDateTime(), nullable=True)
        )
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("calendar_seen", sa.String(length=20), nullable=True))
        batch.create_check_constraint(
            "calendar_seen", f"calendar_seen IS NULL OR calendar_seen IN ({CALENDAR_STATUSES})"
        )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("address", sa.String(length=320), nullable=True))


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("address")
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_constraint(op.f("ck_enrollments_calendar_seen"), type_="check")
        batch.drop_column("calendar_seen")
    with op.batch_alter_table("training_sessions") as batch:
        batch.drop_column("invite_at")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_index("ix_notices_due")
    op.drop_table("notices")
    with op.batch_alter_table("reminders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reminders_enrollment_id"))
    op.drop_table("reminders")
