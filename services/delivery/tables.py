"""Delivery's table: where each caught Pokémon went (party or PC, and which slot)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, UniqueConstraint, bindparam, func, select

from engine.store.db import all_rows, one_row
from services.delivery.model import Storage

metadata = MetaData()

deliveries = Table(
    "deliveries",
    metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("trainer", String(64), nullable=False, index=True),
    Column("pokemon", String(40), nullable=False),
    Column("level", Integer, nullable=False),
    Column("location", String(10), nullable=True),  # party | pc | NULL when both were full
    Column("slot", Integer, nullable=True),
    Column("outcome", String(40), nullable=False),  # delivered | full | failed:<reason>
    # Two instances racing for a trainer's last slot: one fails here and retries its batch.
    UniqueConstraint("trainer", "location", "slot", name="one_pokemon_per_slot"),
)


# Built once, with bind parameters: SQLAlchemy reuses the compiled SQL on every call.
OCCUPANCY = (
    select(deliveries.c.location, func.count())
    .where(deliveries.c.trainer == bindparam("trainer"), deliveries.c.location.is_not(None))
    .group_by(deliveries.c.location)
)


class DeliveryRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def storage(self, trainer: str, party_size: int, pc_capacity: int) -> Storage:
        counts: dict[str, int] = dict(self.conn.execute(OCCUPANCY, {"trainer": trainer}).all())
        return Storage(counts.get("party", 0), counts.get("pc", 0), party_size, pc_capacity)

    def add(self, **row: Any) -> None:
        self.conn.execute(deliveries.insert(), row)

    def get(self, saga_id: str) -> dict[str, Any] | None:
        return one_row(self.conn, deliveries, saga_id=saga_id)

    def for_trainer(self, trainer: str) -> list[dict[str, Any]]:
        return all_rows(self.conn, deliveries, ("location", "slot", "saga_id"), trainer=trainer)
