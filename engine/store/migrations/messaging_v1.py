"""The runtime's inbox and outbox tables as every service's first revision made them.

Frozen, like a migration: later changes to engine.store.db's tables get migrations of their own;
this stays what revision 0001 of each service database created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create() -> None:
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
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"])
    op.create_index("ix_inbox_saga_id", "inbox", ["saga_id"])
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
    op.create_index("ix_outbox_producer", "outbox", ["producer"])


def drop() -> None:
    op.drop_table("outbox")  # its indexes go with it
    op.drop_table("inbox")


def tables(metadata: sa.MetaData) -> None:
    """The same two tables, as SQLAlchemy tables on ``metadata``: what a database made before
    migrations existed (by ``create_all``) holds, to compare one with (engine.store.migrate)."""
    sa.Table(
        "inbox",
        metadata,
        sa.Column("consumer", sa.String(length=100), primary_key=True),
        sa.Column("event_id", sa.String(length=200), primary_key=True),
        sa.Column("saga_id", sa.String(length=200), nullable=False, index=True),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=250), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False, index=True),
    )
    sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("producer", sa.String(length=100), nullable=False, index=True),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("topic", sa.String(length=250), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
    )
