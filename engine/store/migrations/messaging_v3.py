"""The runtime's positions table and a leaner inbox, as every service's revision 0003 made them.

Frozen, like a migration (see messaging_v1). Records re-read from the broker (a redelivery, a
replay) are recognised by their consumer's position on their partition, so the inbox keeps event
ids only for copies re-sent under new offsets, for a short window (engine.store.inbox): it loses its
record coordinates, and its saga index gains the consumer (the saga lookup no longer scans every
row of a consumer on SQLite). The positions are filled from the inbox's coordinates before they
go, so a database in use loses none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def upgrade() -> None:
    op.create_table(
        "positions",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=250), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "topic", "partition"),
        sqlite_with_rowid=False,
    )
    # Where each consumer stands: after the last record it applied or refused, as of when it
    # applied it (the records' own timestamps were not kept; the time applied is later).
    op.execute(
        'INSERT INTO positions (consumer, topic, "partition", "offset", "timestamp") '
        'SELECT consumer, topic, "partition", MAX("offset") + 1, CAST(MAX(received_at) * 1000 AS BIGINT) '
        'FROM inbox GROUP BY consumer, topic, "partition"'
    )
    op.create_table(
        "inbox_v3",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    op.execute(
        "INSERT INTO inbox_v3 (consumer, event_id, saga_id, type, received_at) "
        "SELECT consumer, event_id, saga_id, type, received_at FROM inbox"
    )
    op.drop_table("inbox")  # its indexes go with it
    op.rename_table("inbox_v3", "inbox")
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"])
    op.create_index("ix_inbox_consumer_saga", "inbox", ["consumer", "saga_id"])


def downgrade() -> None:
    """Back to revision 0002's inbox. The coordinates of each applied event are gone: each
    consumer's position becomes a row at the last offset it had passed (what revision 0002's
    ``restore_start`` reads), and its other rows take that partition with offset 0."""
    op.create_table(
        "inbox_v2",
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
    first = "(SELECT MIN(p.topic) FROM positions p WHERE p.consumer = inbox.consumer)"
    op.execute(
        'INSERT INTO inbox_v2 (consumer, event_id, saga_id, type, topic, "partition", "offset", received_at) '
        f"SELECT consumer, event_id, saga_id, type, COALESCE({first}, ''), COALESCE((SELECT MIN(p.\"partition\") "
        f"FROM positions p WHERE p.consumer = inbox.consumer AND p.topic = {first}), 0), 0, received_at FROM inbox"
    )
    op.execute(
        'INSERT INTO inbox_v2 (consumer, event_id, saga_id, type, topic, "partition", "offset", received_at) '
        "SELECT consumer, 'dead:' || topic || ':' || CAST(\"partition\" AS VARCHAR(20)) || '/position', '', "
        '\'dead_letter\', topic, "partition", "offset" - 1, "timestamp" / 1000.0 FROM positions'
    )
    op.drop_table("inbox")
    op.rename_table("inbox_v2", "inbox")
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"])
    op.create_index("ix_inbox_saga_id", "inbox", ["saga_id"])
    op.drop_table("positions")
