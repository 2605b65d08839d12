"""The runtime's rebuild and parked tables, as every service's revision 0002 made them.

Frozen, like a migration (see messaging_v1). A database upgraded from revision 0001 was in
use, so it has no rebuild row: it is live. A database created empty gets its '*' row from
engine.store.migrate in the same transaction (engine.worker.rebuild explains the rest).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create() -> None:
    op.create_table(
        "rebuild",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=True),
        sa.Column("start", sa.JSON(), nullable=True),
        sa.Column("replayed", sa.Boolean(), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("consumer"),
    )
    op.create_table(
        "parked",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=250), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("parked_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("consumer", "event_id", name="parked_once"),
    )
    op.create_index("ix_parked_consumer_saga", "parked", ["consumer", "saga_id"])
    op.create_index("ix_parked_consumer_id", "parked", ["consumer", "id"])


def drop() -> None:
    op.drop_table("parked")  # its indexes go with it
    op.drop_table("rebuild")
