"""third: its own table

Revision ID: 0001
Revises: (none)
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
        "stamps",
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("saga_id"),
    )


def downgrade() -> None:
    op.drop_table("stamps")
