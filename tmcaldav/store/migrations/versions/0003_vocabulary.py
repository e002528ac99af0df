"""the vocabulary grows: answer sources link and import, suggestion state withdrawn;
sync_state.event_count (never used) goes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_SOURCES = "source IN ('poll', 'imip', 'manual')"
NEW_SOURCES = "source IN ('poll', 'imip', 'manual', 'link', 'import')"
OLD_STATES = "state IN ('open', 'applied', 'dismissed')"
NEW_STATES = "state IN ('open', 'applied', 'dismissed', 'withdrawn')"


def _swap(table: str, name: str, condition: str) -> None:
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
        batch.create_check_constraint(name, condition)


def upgrade() -> None:
    """Apply this revision."""
    _swap("responses", "source", NEW_SOURCES)
    _swap("suggestions", "state", NEW_STATES)
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("event_count")


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(
            sa.Column("event_count", sa.Integer(), nullable=False, server_default="0")
        )
    _swap("suggestions", "state", OLD_STATES)
    _swap("responses", "source", OLD_SOURCES)
