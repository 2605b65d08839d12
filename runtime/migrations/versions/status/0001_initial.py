"""status: initial tables

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
        "inbox",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=250), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbox_received_at"), ["received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbox_saga_id"), ["saga_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("producer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("topic", sa.String(length=250), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_producer"), ["producer"], unique=False)

    op.create_table(
        "statuses",
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("trainer", sa.String(length=64), nullable=False),
        sa.Column("pokemon", sa.String(length=40), nullable=False),
        sa.Column("previous_status", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("saga_id"),
    )
    with op.batch_alter_table("statuses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_statuses_trainer"), ["trainer"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("statuses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_statuses_trainer"))

    op.drop_table("statuses")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_producer"))

    op.drop_table("outbox")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_saga_id"))
        batch_op.drop_index(batch_op.f("ix_inbox_received_at"))

    op.drop_table("inbox")
