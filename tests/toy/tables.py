"""The toy's tables, the same in both services' databases: each saga's mark, a tally per name."""

from __future__ import annotations

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, select, update

metadata = MetaData()

marks = Table(
    "marks",
    metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("outcome", String(80), nullable=False),  # done | undone | failed:<reason>
)

tallies = Table(
    "tallies",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
)


class ToyRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def count(self, name: str) -> int:
        """How many times a step was applied for ``name`` (0 for a name never seen)."""
        return self.conn.execute(select(tallies.c.count).where(tallies.c.name == name)).scalar() or 0

    def add_one(self, name: str) -> None:
        query = select(tallies.c.count).where(tallies.c.name == name).with_for_update()
        count = self.conn.execute(query).scalar()
        if count is None:
            self.conn.execute(tallies.insert(), {"name": name, "count": 1})
        else:
            self.conn.execute(update(tallies).where(tallies.c.name == name).values(count=count + 1))

    def take_one(self, name: str) -> None:
        self.conn.execute(update(tallies).where(tallies.c.name == name).values(count=tallies.c.count - 1))

    def mark(self, saga_id: str, name: str, outcome: str) -> None:
        self.conn.execute(marks.insert(), {"saga_id": saga_id, "name": name, "outcome": outcome})

    def outcome(self, saga_id: str) -> str | None:
        return self.conn.execute(select(marks.c.outcome).where(marks.c.saga_id == saga_id)).scalar()

    def remark(self, saga_id: str, outcome: str) -> None:
        self.conn.execute(update(marks).where(marks.c.saga_id == saga_id).values(outcome=outcome))
