"""expression_feedback: one stored expression analysis per answer (msId, index)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "expression_feedback",
        sa.Column("ms_id", sa.String(128), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=True),
        sa.Column("source", sa.String(2048), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_expression_feedback_status", "expression_feedback", ["status"])


def downgrade() -> None:
    op.drop_index("ix_expression_feedback_status", table_name="expression_feedback")
    op.drop_table("expression_feedback")
