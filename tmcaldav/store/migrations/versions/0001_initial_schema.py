"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 03:40:52.863170
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tmcaldav.store.model

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""

    op.create_table(
        "people",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("phone", sa.String(length=50), nullable=True),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_people")),
        sa.UniqueConstraint("email", name=op.f("uq_people_email")),
    )
    op.create_table(
        "sync_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("calendar_url", sa.String(length=1000), nullable=False),
        sa.Column("sync_token", sa.String(length=1000), nullable=True),
        sa.Column("ctag", sa.String(length=300), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("last_poll_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_state")),
        sa.UniqueConstraint("calendar_url", name=op.f("uq_sync_state_calendar_url")),
    )
    op.create_table(
        "training_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("course", sa.String(length=200), nullable=True),
        sa.Column("start_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("end_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=500), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("uid", sa.String(length=300), nullable=True),
        sa.Column("href", sa.String(length=1000), nullable=True),
        sa.Column("etag", sa.String(length=300), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("calendar_state", sa.String(length=20), nullable=False),
        sa.Column("published_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "calendar_state IN ('unpublished', 'published', 'missing')",
            name=op.f("ck_training_sessions_calendar_state"),
        ),
        sa.CheckConstraint(
            "status IN ('scheduled', 'cancelled')", name=op.f("ck_training_sessions_status")
        ),
        sa.CheckConstraint(
            "capacity IS NULL OR capacity >= 0", name=op.f("ck_training_sessions_capacity")
        ),
        sa.CheckConstraint("end_at > start_at", name=op.f("ck_training_sessions_times")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_sessions")),
        sa.UniqueConstraint("key", name=op.f("uq_training_sessions_key")),
        sa.UniqueConstraint("uid", name=op.f("uq_training_sessions_uid")),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("waitlisted_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("calendar_status", sa.String(length=20), nullable=False),
        sa.Column("calendar_reason", sa.String(length=50), nullable=True),
        sa.Column("invited_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("responded_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("answer_sequence", sa.Integer(), nullable=True),
        sa.Column("answer_dtstamp", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "calendar_status IN ('not_invited', 'invited', 'accepted', 'tentative', 'declined', 'delegated')",
            name=op.f("ck_enrollments_calendar_status"),
        ),
        sa.CheckConstraint(
            "status IN ('enrolled', 'waitlisted', 'cancelled', 'attended', 'no_show')",
            name=op.f("ck_enrollments_status"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["people.id"],
            name=op.f("fk_enrollments_person_id_people"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            name=op.f("fk_enrollments_session_id_training_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint("session_id", "person_id", name="session_person"),
    )
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_notes_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    with op.batch_alter_table("notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notes_enrollment_id"), ["enrollment_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("hook", sa.String(length=50), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("enrollment_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("done_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_outbox_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            name=op.f("fk_outbox_session_id_training_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_pending", ["done_at"], unique=False)

    op.create_table(
        "responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("calendar_status", sa.String(length=20), nullable=False),
        sa.Column("responded_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("observed_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("dtstamp", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=50), nullable=True),
        sa.CheckConstraint(
            "calendar_status IN ('not_invited', 'invited', 'accepted', 'tentative', 'declined', 'delegated')",
            name=op.f("ck_responses_calendar_status"),
        ),
        sa.CheckConstraint(
            "source IN ('poll', 'imip', 'manual')", name=op.f("ck_responses_source")
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_responses_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
    )
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_responses_enrollment_id"), ["enrollment_id"], unique=False
        )

    op.create_table(
        "suggestions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("plugin", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("dedupe_key", sa.String(length=500), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", tmcaldav.store.model.UTCDateTime(), nullable=False),
        sa.Column("decided_at", tmcaldav.store.model.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('open', 'applied', 'dismissed')", name=op.f("ck_suggestions_state")
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_suggestions_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            name=op.f("fk_suggestions_session_id_training_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suggestions")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_suggestions_dedupe_key")),
    )
    with op.batch_alter_table("suggestions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_suggestions_session_id"), ["session_id"], unique=False)


def downgrade() -> None:
    """Undo this revision."""

    with op.batch_alter_table("suggestions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suggestions_session_id"))

    op.drop_table("suggestions")
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_responses_enrollment_id"))

    op.drop_table("responses")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_pending")

    op.drop_table("outbox")
    with op.batch_alter_table("notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notes_enrollment_id"))

    op.drop_table("notes")
    op.drop_table("enrollments")
    op.drop_table("training_sessions")
    op.drop_table("sync_state")
    op.drop_table("people")
