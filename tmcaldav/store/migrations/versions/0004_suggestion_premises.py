"""suggestions keep their premise (what they were made from) and why they were withdrawn

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("suggestions") as batch:
        # Suggestions made before this revision have no premise: nothing to check.
        batch.add_column(sa.Column("premise", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("withdrawn_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("suggestions") as batch:
        batch.drop_column("withdrawn_reason")
        batch.drop_column("premise")
