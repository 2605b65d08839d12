"""Identities that never start over, as every service's revision 0004 made them.

Frozen, like a migration (see messaging_v1).

- ``positions`` gains ``topic_id``: the id Kafka gave the topic a position was recorded on. A
  topic deleted and made again gets a new id, and a position recorded for another one is void
  (engine.store.inbox). Positions recorded before this revision have none: the first batch read from
  their topic adopts its id (they were recorded on the topic as it is).
- ``parked`` and ``outbox`` take AUTOINCREMENT on SQLite: a row id is never handed out again,
  even when the table empties, so a statement that deletes or updates a row by an id it read
  earlier cannot reach another row (PostgreSQL's sequences never gave one out twice).
- ``parked`` keeps each saga's head due (``due_at`` set, on every head) and an index on
  (consumer, due_at): finding what is due reads what is due, not every parked row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

HEADS = "SELECT MIN(id) FROM parked GROUP BY consumer, saga_id"


def upgrade() -> None:
    op.add_column("positions", sa.Column("topic_id", sa.String(length=36), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        for table in ("parked", "outbox"):
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass
    op.execute(f"UPDATE parked SET due_at = parked_at WHERE due_at IS NULL AND id IN ({HEADS})")
    op.create_index("ix_parked_consumer_due", "parked", ["consumer", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_parked_consumer_due", table_name="parked")
    if op.get_bind().dialect.name == "sqlite":
        for table in ("parked", "outbox"):
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
                pass
    with op.batch_alter_table("positions") as batch:
        batch.drop_column("topic_id")
