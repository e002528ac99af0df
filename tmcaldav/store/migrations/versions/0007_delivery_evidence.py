"""delivery read back and the evidence of an answer's time: enrollments keep the
server's SCHEDULE-STATUS, schedule_checks its history, responses their evidence

Revision ID: 0007
Revises: 0008
Create Date: 2026-12-01 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tmcaldav.store.model

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None

DELIVERIES = "delivery_status IN ('delivered', 'sent', 'not_delivered')"
EVIDENCE = "evidence IN ('reply-dtstamp', 'server-dtstamp', 'observed')"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("delivery_status", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("schedule_status", sa.String(length=200), nullable=True))
        batch.add_column(
            sa.Column("delivery_checked_at", tmcaldav.store.model.UTCDateTime(), nullable=True)
        )
        batch.create_check_constraint("delivery_status", DELIVERIES)
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("evidence", sa.String(length=20), nullable=True))
        batch.create_check_constraint("evidence", EVIDENCE)
    # What the existing answers rest on: a REPLY's own time where one was kept (iMIP, or
    # Outlook's reply time seen by a poll), else the moment a poll first saw the answer.
    op.execute(
        "UPDATE responses SET evidence = 'reply-dtstamp' "
        "WHERE source IN ('poll', 'imip') AND dtstamp IS NOT NULL"
    )
    op.execute(
        "UPDATE responses SET evidence = 'observed' "
        "WHERE source IN ('poll', 'imip') AND dtstamp IS NULL AND reason IS NULL"
    )
    op.create_table(
        "schedule_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("checked_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("delivery_status", sa.String(length=20), nullable=False),
        sa.Column("schedule_status", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=20), nullable=True),
        sa.CheckConstraint(DELIVERIES, name=op.f("ck_schedule_checks_delivery_status")),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_schedule_checks_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_checks")),
    )
    with op.batch_alter_table("schedule_checks") as batch:
        batch.create_index(
            batch.f("ix_schedule_checks_enrollment_id"), ["enrollment_id"], unique=False
        )


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("schedule_checks") as batch:
        batch.drop_index(batch.f("ix_schedule_checks_enrollment_id"))
    op.drop_table("schedule_checks")
    with op.batch_alter_table("responses") as batch:
        batch.drop_constraint(op.f("ck_responses_evidence"), type_="check")
        batch.drop_column("evidence")
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_constraint(op.f("ck_enrollments_delivery_status"), type_="check")
        batch.drop_column("delivery_checked_at")
        batch.drop_column("schedule_status")
        batch.drop_column("delivery_status")
