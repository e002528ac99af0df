"""daemons: the running daemons, active or standing by, with their heartbeat

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tmcaldav.store.model

revision = "0009"
# The brief's base is 0003; this branch holds main's 0004 and 0006 already, and two
# heads would break every command, so it follows 0006. The lead re-chains on merge.
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "daemons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("started_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("active_since", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=True),
        sa.CheckConstraint("role IN ('active', 'standby')", name=op.f("ck_daemons_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daemons")),
    )


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("daemons")
