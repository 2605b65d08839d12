"""Combat's tables: each saga's attack, with the hp before it, so it can be undone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Connection, Integer, MetaData, String, Table, bindparam, update

from engine.store.db import all_rows, one_row

metadata = MetaData()

attacks = Table(
    "attacks",
    metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("trainer", String(64), nullable=False, index=True),
    Column("attacker", String(40), nullable=False),
    Column("pokemon", String(40), nullable=False),
    Column("hp_before", Integer, nullable=False),
    Column("damage", Integer, nullable=False),
    Column("hp", Integer, nullable=False),  # the Pokémon's hp as combat left it
    Column("fainted", Boolean, nullable=False),
    Column("outcome", String(40), nullable=False),  # weakened | fainted | failed:<reason> | healed
    Column("healed", Boolean, nullable=False, default=False),
)


HEAL = (
    update(attacks)
    .where(attacks.c.saga_id == bindparam("p_id"))
    .values(hp=bindparam("p_hp"), healed=True, outcome="healed")
)


class CombatRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, saga_id: str) -> dict[str, Any] | None:
        return one_row(self.conn, attacks, saga_id=saga_id)

    def add(self, **row: Any) -> None:
        self.conn.execute(attacks.insert(), {"healed": False, **row})

    def heal(self, saga_id: str) -> bool:
        """Restore the hp the attack took; False when there was nothing to restore."""
        row = self.get(saga_id)
        if row is None or row["outcome"] != "weakened":
            return False
        self.conn.execute(HEAL, {"p_id": saga_id, "p_hp": row["hp_before"]})
        return True

    def for_trainer(self, trainer: str) -> list[dict[str, Any]]:
        return all_rows(self.conn, attacks, ("saga_id",), trainer=trainer)
