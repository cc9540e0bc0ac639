"""room_answers: the uploaded media's type, size and duration, the answer and bqfk jobs, error

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("room_answers") as batch:  # SQLite: a table copy
        batch.add_column(sa.Column("media_type", sa.String(8), nullable=True))
        batch.add_column(sa.Column("content_type", sa.String(128), nullable=True))
        batch.add_column(sa.Column("media_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("duration_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("job_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("bqfk_job", sa.String(128), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.create_index("ix_room_answers_status", ["status"])


def downgrade() -> None:
    with op.batch_alter_table("room_answers") as batch:
        batch.drop_index("ix_room_answers_status")
        for col in (
            "error",
            "bqfk_job",
            "job_id",
            "duration_s",
            "media_bytes",
            "content_type",
            "media_type",
        ):
            batch.drop_column(col)
