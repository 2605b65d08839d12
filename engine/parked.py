"""Parked records: records a participant has taken from its topics (their offsets are committed)
but holds back, in its own database, to apply later in the order they arrived.

While a participant rebuilds (engine.rebuild), a record it has no recorded decision for — one
that queued while its database was lost — is parked, and so is every later record of a saga
that has one parked: they are applied after every recorded record, on the rebuilt state.

A parked record is kept whole (key, value, headers, coordinates), so applying it later is
applying the record itself: the same fates, the same inbox row, the same identity checks.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, func, select, text

from engine.envelope import Envelope
from engine.kafka import Record

REBUILDING = "rebuilding"  # the reason a record is parked while its participant rebuilds


@dataclass
class ParkedRecord:
    """A parked record, as the loop hands records over (engine.kafka.Record), with its row id."""

    id: int
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]


class Parked:
    """One consumer's rows in its service's ``parked`` table."""

    def __init__(self, table: Table, consumer: str) -> None:
        self.table = table
        self.consumer = consumer
        mine = table.c.consumer == bindparam("consumer")
        self._oldest = select(table).where(mine).order_by(table.c.id).limit(bindparam("limit"))

    def row(self, record: Record, envelope: Envelope, reason: str) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "event_id": envelope.id,
            "saga_id": envelope.sagaid,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": getattr(record, "timestamp", None) or int(time.time() * 1000),
            "key": record.key,
            "value": record.value or b"",
            "headers": [[k, _encode(v)] for k, v in record.headers],
            "reason": reason,
            "parked_at": time.time(),
            "attempts": 0,
            "due_at": None,
            "last_error": None,
        }

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self.table.insert(), rows)

    def oldest(self, conn: Connection, limit: int) -> list[ParkedRecord]:
        """The ``limit`` oldest parked records, in arrival order. On PostgreSQL the caller holds the
        consumer's lock (``lock``): one instance applies a consumer's parked records at a time."""
        rows = conn.execute(self._oldest, {"consumer": self.consumer, "limit": limit})
        return [_record(row._asdict()) for row in rows]

    def lock(self, conn: Connection) -> None:
        """Take this consumer's parked records for the transaction (PostgreSQL: an advisory lock;
        SQLite's write lock, taken when the transaction begins, already does it)."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"parked:{self.consumer}"})

    def delete(self, conn: Connection, ids: Iterable[int]) -> None:
        conn.execute(delete(self.table).where(self.table.c.id.in_(list(ids))))

    def count(self, engine: Engine) -> int:
        with engine.connect() as conn:
            query = select(func.count()).select_from(self.table).where(self.table.c.consumer == self.consumer)
            return int(conn.execute(query).scalar_one())


def _encode(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _record(row: dict[str, Any]) -> ParkedRecord:
    headers = [(str(k), None if v is None else base64.b64decode(v)) for k, v in row["headers"]]
    return ParkedRecord(
        row["id"], row["topic"], row["partition"], row["offset"], row["timestamp"], row["key"], row["value"], headers
    )
