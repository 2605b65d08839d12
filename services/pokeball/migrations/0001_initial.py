"""pokeball: initial tables

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
        "bags",
        sa.Column("trainer", sa.String(length=64), nullable=False),
        sa.Column("balls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("trainer"),
    )
    op.create_table(
        "throws",
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("trainer", sa.String(length=64), nullable=False),
        sa.Column("pokemon", sa.String(length=40), nullable=False),
        sa.Column("ball", sa.String(length=20), nullable=True),
        sa.Column("shakes", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("refunded", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("saga_id"),
    )
    with op.batch_alter_table("throws", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_throws_trainer"), ["trainer"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("throws", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_throws_trainer"))

    op.drop_table("throws")
    op.drop_table("bags")
    messaging_v1.drop()
