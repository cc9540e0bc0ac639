"""rooms, room_questions, room_answers

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("job", sa.String(256), nullable=True),
        sa.Column("families", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("avatar", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("question_engine", sa.String(32), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("last_activity_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("close_reason", sa.String(64), nullable=True),
    )
    op.create_index("ix_rooms_owner", "rooms", ["owner"])
    op.create_index("ix_rooms_status", "rooms", ["status"])
    op.create_index("ix_rooms_expires_at", "rooms", ["expires_at"])
    op.create_table(
        "room_questions",
        sa.Column(
            "room_id",
            sa.String(64),
            sa.ForeignKey("rooms.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("competency", sa.String(32), nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("bank_id", sa.String(64), nullable=True),
        sa.Column("suggested_s", sa.Integer(), nullable=False),
        sa.Column("clip_status", sa.String(16), nullable=False),
        sa.Column("tts_job", sa.String(128), nullable=True),
        sa.Column("render_job", sa.String(128), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.Column("audio_path", sa.String(1024), nullable=True),
        sa.Column("video_path", sa.String(1024), nullable=True),
        sa.Column("clip_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_room_questions_clip_status", "room_questions", ["clip_status"])
    op.create_table(
        "room_answers",
        sa.Column(
            "room_id",
            sa.String(64),
            sa.ForeignKey("rooms.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("media_path", sa.String(1024), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("room_answers")
    op.drop_table("room_questions")
    op.drop_table("rooms")
