"""robustness: the poll's retry list, and each plugin's attempts per outbox event

Revision ID: 0005
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tmcaldav.store.model

revision = "0005"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "sync_retries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sync_state_id", sa.Integer(), nullable=False),
        sa.Column("href", sa.String(length=1000), nullable=False),
        sa.Column("first_seen_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sync_state_id"],
            ["sync_state.id"],
            name=op.f("fk_sync_retries_sync_state_id_sync_state"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_retries")),
        sa.UniqueConstraint("sync_state_id", "href", name="state_href"),
    )
    op.create_table(
        "plugin_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("plugin", sa.String(length=100), nullable=False),
        sa.Column("hook", sa.String(length=50), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("succeeded_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("parked_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("updated_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
            name=op.f("fk_plugin_attempts_outbox_id_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_attempts")),
        sa.UniqueConstraint(
            "outbox_id", "plugin", "hook", name="outbox_plugin_hook"
        ),
    )
    with op.batch_alter_table("plugin_attempts") as batch_op:
        batch_op.create_index("ix_plugin_attempts_parked", ["parked_at"], unique=False)


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("plugin_attempts") as batch_op:
        batch_op.drop_index("ix_plugin_attempts_parked")
    op.drop_table("plugin_attempts")
    op.drop_table("sync_retries")
