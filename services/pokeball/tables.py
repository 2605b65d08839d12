"""Pokeball's tables: each trainer's bag, and every throw (so it can be refunded)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Connection, Integer, MetaData, String, Table, select, update

from runtime.db import all_rows, one_row
from services.pokeball.model import Bag

metadata = MetaData()

bags = Table(
    "bags",
    metadata,
    Column("trainer", String(64), primary_key=True),
    Column("balls", Integer, nullable=False),
)

throws = Table(
    "throws",
    metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("trainer", String(64), nullable=False, index=True),
    Column("pokemon", String(40), nullable=False),
    Column("ball", String(20), nullable=True),  # NULL: there was no ball to throw
    Column("shakes", Integer, nullable=False),
    Column("outcome", String(40), nullable=False),  # caught | broke_free | out_of_balls | released | failed:<reason>
    Column("refunded", Boolean, nullable=False, default=False),
)


class PokeballRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def bag(self, trainer: str, starter_balls: int) -> Bag:
        """The trainer's bag, locked for this transaction; a new trainer gets the starter balls."""
        row = self.conn.execute(select(bags.c.balls).where(bags.c.trainer == trainer).with_for_update()).first()
        if row is None:
            self.conn.execute(bags.insert().values(trainer=trainer, balls=starter_balls))
            return Bag(starter_balls)
        return Bag(row.balls)

    def save_bag(self, trainer: str, bag: Bag) -> None:
        self.conn.execute(update(bags).where(bags.c.trainer == trainer).values(balls=bag.balls))

    def add_throw(self, **row: Any) -> None:
        self.conn.execute(throws.insert().values(refunded=False, **row))

    def get_throw(self, saga_id: str) -> dict[str, Any] | None:
        return one_row(self.conn, throws, saga_id=saga_id)

    def mark_released(self, saga_id: str) -> None:
        self.conn.execute(update(throws).where(throws.c.saga_id == saga_id).values(outcome="released", refunded=True))

    def balls(self, trainer: str) -> int | None:
        return self.conn.execute(select(bags.c.balls).where(bags.c.trainer == trainer)).scalar()

    def for_trainer(self, trainer: str) -> list[dict[str, Any]]:
        return all_rows(self.conn, throws, ("saga_id",), trainer=trainer)
