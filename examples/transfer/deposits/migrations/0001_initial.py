"""deposits: initial tables

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.store.migrations import messaging_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_v1.create()
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "deposits",
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("saga_id"),
    )
    op.create_index("ix_deposits_account_id", "deposits", ["account_id"])


def downgrade() -> None:
    op.drop_table("deposits")  # its index goes with it
    op.drop_table("accounts")
    messaging_v1.drop()
