"""The third step's table: the names it stamped."""

from __future__ import annotations

from sqlalchemy import Column, Connection, MetaData, String, Table, select

metadata = MetaData()

stamps = Table("stamps", metadata, Column("saga_id", String(200), primary_key=True), Column("name", String(64)))


class StampRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def stamp(self, saga_id: str, name: str) -> None:
        self.conn.execute(stamps.insert(), {"saga_id": saga_id, "name": name})

    def stamped(self) -> list[str]:
        return sorted(self.conn.execute(select(stamps.c.saga_id)).scalars())
