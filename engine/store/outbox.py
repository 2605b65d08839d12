"""The outbox: what a participant must publish, written in the same local transaction as the
inbox row and the state change; published in order (acks=all) after the commit, then deleted.
Rows a crash left unsent are published again at start-up when no other instance of the participant
runs, and by any running instance of the participant once they have waited longer than a grace period
(engine.worker.flusher); consumers dedupe by event id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Engine, Table, bindparam, delete, select

from engine.wire.envelope import Envelope


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str]]
    type: str


def event_row(producer: str, envelope: Envelope, topic: str, trace_headers: Sequence[list[str]] = ()) -> dict[str, Any]:
    """The outbox row of ``envelope``, keyed by its saga id, with its type and trace context as headers."""
    return {
        "producer": producer,
        "event_id": envelope.id,
        "topic": topic,
        "key": envelope.sagaid.encode(),
        "value": envelope.to_json(),
        "headers": [["ce_type", envelope.type], *trace_headers],
    }


class Outbox:
    """One producer's rows in its service's ``outbox`` table."""

    def __init__(self, table: Table, producer: str) -> None:
        self.table = table
        self.producer = producer
        ids: BindParameter[Any] = bindparam("ids", expanding=True)  # built once: compiled once
        self._delete = delete(table).where(table.c.id.in_(ids), table.c.producer == bindparam("producer"))

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> list[OutboxRow]:
        """Write ``rows``; what must now be published, in insert order."""
        if not rows:
            return []
        ids: Iterable[int]
        if conn.dialect.name == "sqlite":
            # RETURNING in parameter order makes SQLAlchemy send one INSERT per row on SQLite. The
            # transaction holds the write lock (BEGIN IMMEDIATE), so the rows get consecutive
            # rowids, each one more than the largest before it: the last one tells them all.
            conn.execute(self.table.insert(), rows)
            last = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
            ids = range(last - len(rows) + 1, last + 1)
        else:
            query = self.table.insert().returning(self.table.c.id, sort_by_parameter_order=True)
            ids = conn.execute(query, rows).scalars()
        return [_to_outbox_row(i, r) for i, r in zip(ids, rows, strict=True)]

    def pending(self, engine: Engine) -> list[OutboxRow]:
        """Unsent rows of this producer, oldest first (flushed at start-up)."""
        with engine.connect() as conn:
            query = select(self.table).where(self.table.c.producer == self.producer).order_by(self.table.c.id)
            return [_to_outbox_row(r.id, r._asdict()) for r in conn.execute(query)]

    def waiting(self, engine: Engine) -> list[int]:
        """The ids of this producer's rows, oldest first: every row not yet published, in hand or not."""
        with engine.connect() as conn:
            query = select(self.table.c.id).where(self.table.c.producer == self.producer).order_by(self.table.c.id)
            return list(conn.execute(query).scalars())

    def rows(self, engine: Engine, ids: Sequence[int]) -> list[OutboxRow]:
        """The rows among ``ids`` still in the outbox, oldest first."""
        with engine.connect() as conn:
            t = self.table
            query = select(t).where(t.c.id.in_(list(ids)), t.c.producer == self.producer).order_by(t.c.id)
            return [_to_outbox_row(r.id, r._asdict()) for r in conn.execute(query)]

    def mark_sent(self, engine: Engine, ids: Sequence[int]) -> None:
        """A published row has no further use: marking it sent deletes it (a transaction of its own)."""
        with engine.begin() as conn:
            self.delete(conn, ids)

    def delete(self, conn: Connection, ids: Sequence[int]) -> None:
        """Rows published and acknowledged, deleted in the transaction of ``conn``."""
        if ids:  # ids are never handed out again (AUTOINCREMENT): an id names this row or none
            conn.execute(self._delete, {"ids": list(ids), "producer": self.producer})


def _to_outbox_row(row_id: int, row: dict[str, Any]) -> OutboxRow:
    headers = [(str(k), str(v)) for k, v in row["headers"]]
    type_ = next((v for k, v in headers if k == "ce_type"), "dead_letter")
    return OutboxRow(row_id, row["topic"], row["key"], row["value"], headers, type_)
