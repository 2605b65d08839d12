"""Pokeball's tables: each trainer's bag, and every throw (so it can be refunded)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Connection, Integer, MetaData, String, Table, bindparam, select, update

from engine.store.db import all_rows, one_row
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


# Built once, with bind parameters: SQLAlchemy reuses the compiled SQL on every call.
BALLS = select(bags.c.balls).where(bags.c.trainer == bindparam("trainer"))
LOCK_BAG = BALLS.with_for_update()
SAVE_BAG = update(bags).where(bags.c.trainer == bindparam("p_trainer")).values(balls=bindparam("p_balls"))
RELEASE = update(throws).where(throws.c.saga_id == bindparam("p_id")).values(outcome="released", refunded=True)


class PokeballRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._unsaved: set[str] = set()  # trainers whose bag was handed out new, not yet in the table

    def bag(self, trainer: str, starter_balls: int) -> Bag:
        """The trainer's bag, locked for this transaction; a new trainer gets the starter balls
        (its row is written by ``save_bag``: one statement, not an insert and an update)."""
        row = self.conn.execute(LOCK_BAG, {"trainer": trainer}).first()
        if row is None:
            self._unsaved.add(trainer)
            return Bag(starter_balls)
        self._unsaved.discard(trainer)
        return Bag(row.balls)

    def save_bag(self, trainer: str, bag: Bag) -> None:
        if trainer in self._unsaved:
            self._unsaved.discard(trainer)
            self.conn.execute(bags.insert(), {"trainer": trainer, "balls": bag.balls})
        else:
            self.conn.execute(SAVE_BAG, {"p_trainer": trainer, "p_balls": bag.balls})

    def add_throw(self, **row: Any) -> None:
        self.conn.execute(throws.insert(), {"refunded": False, **row})

    def get_throw(self, saga_id: str) -> dict[str, Any] | None:
        return one_row(self.conn, throws, saga_id=saga_id)

    def mark_released(self, saga_id: str) -> None:
        self.conn.execute(RELEASE, {"p_id": saga_id})

    def balls(self, trainer: str) -> int | None:
        return self.conn.execute(BALLS, {"trainer": trainer}).scalar()

    def for_trainer(self, trainer: str) -> list[dict[str, Any]]:
        return all_rows(self.conn, throws, ("saga_id",), trainer=trainer)
