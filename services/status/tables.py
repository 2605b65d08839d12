"""Status's tables: the status it gave each saga's Pokémon, and the status it replaced."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, MetaData, String, Table, bindparam, update

from engine.store.db import all_rows, one_row

metadata = MetaData()

statuses = Table(
    "statuses",
    metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("trainer", String(64), nullable=False, index=True),
    Column("pokemon", String(40), nullable=False),
    Column("previous_status", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("outcome", String(40), nullable=False),  # paralyzed | failed:<reason> | restored
)


RESTORE = (
    update(statuses)
    .where(statuses.c.saga_id == bindparam("p_id"))
    .values(status=bindparam("p_status"), outcome="restored")
)


class StatusRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, saga_id: str) -> dict[str, Any] | None:
        return one_row(self.conn, statuses, saga_id=saga_id)

    def add(self, **row: Any) -> None:
        self.conn.execute(statuses.insert(), row)

    def restore(self, saga_id: str) -> bool:
        """Put back the previous status; False when there was nothing to restore."""
        row = self.get(saga_id)
        if row is None or row["outcome"] != "paralyzed":
            return False
        self.conn.execute(RESTORE, {"p_id": saga_id, "p_status": row["previous_status"]})
        return True

    def for_trainer(self, trainer: str) -> list[dict[str, Any]]:
        return all_rows(self.conn, statuses, ("saga_id",), trainer=trainer)
