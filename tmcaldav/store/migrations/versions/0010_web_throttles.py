"""web_throttles: failed logins and answer-link answers counted in the store, so every
web node sees the same counts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tmcaldav.store.model

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "web_throttles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("started_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("last_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_throttles")),
        sa.UniqueConstraint("scope", "key", name="scope_key"),
    )
    op.create_index("ix_web_throttles_last_at", "web_throttles", ["last_at"], unique=False)


def downgrade() -> None:
    """Undo this revision."""
    op.drop_index("ix_web_throttles_last_at", table_name="web_throttles")
    op.drop_table("web_throttles")
