"""The inbox: what a participant has applied, written in the same local transaction as the state
change and the outbox rows, so a record that comes again changes nothing.

Two records of what was applied, for the two ways a record comes again:

- **Positions** (eventsourcing's tracking record): per input partition, the offset after the
  last record whose fate was committed, and the latest timestamp among those records. A record
  read again from the broker (redelivered after a crash or a rebalance, re-read by a replay, at
  any age) sits below its partition's position with a timestamp no later than its: a duplicate,
  known without a row of its own. One row per partition, whatever the traffic.
- **Event ids**, one row per (consumer, event id), for copies that come under *new* offsets: an
  outbox row published again (an instance died between publishing and deleting it; engine.flusher),
  or a client sending an event twice. Those arrive within a short time of the first, so the rows
  are kept for a window (``inbox_retention_hours``, 24 h by default) and pruned, instead of for
  as long as the broker keeps records. The same rows answer the identity questions asked of each
  batch: was this event id applied, for which saga and type; has this saga already had an event
  of this type under another id. A record refused at the door is kept by its coordinates
  (``dead:<topic>:<partition>:<offset>``, type ``dead_letter``).

A record below its position whose timestamp is later than the position's cannot have been read
before (the topic was deleted and made again, and its offsets started over): it is not taken for
a duplicate, and the identity checks decide.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    Select,
    Table,
    bindparam,
    case,
    delete,
    literal,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite

DEAD_LETTER = "dead_letter"  # the type of a refused record's row
PARKED = "parked"  # the type of a parked record's row in ``applied`` (engine.parked)


class Record(Protocol):
    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds


Position = tuple[int, int]  # (the offset after the last record passed, the latest timestamp among them)


def behind(record: Record, position: Position | None) -> bool:
    """Was ``record`` passed already (read before, at ``position``)? Below the position, and not
    later than the latest record passed (a later one means the partition's offsets started over)."""
    return position is not None and record.offset < position[0] and record.timestamp <= position[1]


def marker(record: Record) -> str:
    """The inbox key of a refused record: its coordinates."""
    return f"dead:{record.topic}:{record.partition}:{record.offset}"


class Inbox:
    """One consumer's rows in its service's ``inbox`` table."""

    def __init__(
        self, table: Table, consumer: str, parked: Table | None = None, positions: Table | None = None
    ) -> None:
        self.table = table
        self.consumer = consumer
        self.positions_table = positions
        self._upserts: dict[str, Any] = {}
        if positions is not None:  # built once, with a bind parameter: compiled once
            located = (positions.c.topic, positions.c.partition, positions.c.offset, positions.c.timestamp)
            self._positions = select(*located).where(positions.c.consumer == bindparam("consumer"))
        keys: BindParameter[Any] = bindparam("keys", expanding=True)
        sagas: BindParameter[Any] = bindparam("sagas", expanding=True)
        queries: list[Select[Any]] = []
        for source, type_ in ((table, table.c.type), *(((parked, literal(PARKED)),) if parked is not None else ())):
            columns = (source.c.event_id, source.c.saga_id, type_)
            mine = source.c.consumer == bindparam("consumer")
            queries += [select(*columns).where(mine, source.c.event_id.in_(keys)),
                        select(*columns).where(mine, source.c.saga_id.in_(sagas))]  # fmt: skip
        self._query = union_all(*queries)

    def applied(self, conn: Connection, keys: Iterable[str], sagas: Iterable[str] = ()) -> list[tuple[str, str, str]]:
        """(event id, saga id, type) of the rows with one of ``keys`` or of one of ``sagas``: one query.
        With the parked table, its records are among them, as type ``parked``."""
        params = {"consumer": self.consumer, "keys": sorted(set(keys)), "sagas": sorted(set(sagas))}
        return [(event_id, saga_id, type_) for event_id, saga_id, type_ in conn.execute(self._query, params)]

    def row(self, key: str, saga_id: str, type_: str) -> dict[str, Any]:
        """The row saying ``key`` (an event id, or a refused record's marker) was applied now."""
        now = time.time()
        return {"consumer": self.consumer, "event_id": key, "saga_id": saga_id, "type": type_, "received_at": now}

    def positions(self, conn: Connection) -> dict[tuple[str, int], Position]:
        """This consumer's position on each partition it has read."""
        if self.positions_table is None:
            return {}
        rows = conn.execute(self._positions, {"consumer": self.consumer})
        return {(topic, partition): (offset, stamp) for topic, partition, offset, stamp in rows}

    def advance(self, conn: Connection, known: dict[tuple[str, int], Position], records: Iterable[Record]) -> None:
        """Move this consumer's positions past ``records`` (never back), in one statement.
        ``known``: the positions as read in this transaction."""
        table = self.positions_table
        if table is None:
            return
        passed: dict[tuple[str, int], Position] = {}
        for record in records:
            key = (record.topic, record.partition)
            offset, stamp = passed.get(key, known.get(key, (-1, -1)))
            passed[key] = (max(offset, record.offset + 1), max(stamp, record.timestamp))
        rows = [
            {"consumer": self.consumer, "topic": at[0], "partition": at[1], "offset": offset, "timestamp": stamp}
            for at, (offset, stamp) in passed.items()
        ]
        if rows:
            conn.execute(self._upsert(conn.dialect.name), rows)

    def _upsert(self, dialect: str) -> Any:
        """INSERT of a position, or on conflict its row moved forward (never back); built once."""
        if dialect not in self._upserts:
            self._upserts[dialect] = self._build_upsert(dialect)
        return self._upserts[dialect]

    def _build_upsert(self, dialect: str) -> Any:
        table = self.positions_table
        assert table is not None
        statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        new = statement.excluded
        return statement.on_conflict_do_update(
            index_elements=[table.c.consumer, table.c.topic, table.c.partition],
            set_={
                "offset": case((table.c.offset < new.offset, new.offset), else_=table.c.offset),
                "timestamp": case((table.c.timestamp < new.timestamp, new.timestamp), else_=table.c.timestamp),
            },
        )

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self.table.insert(), rows)

    def prune(self, engine: Engine, older_than_hours: float, chunk: int = 10_000) -> int:
        """Forget events applied more than ``older_than_hours`` ago (see inbox_retention_hours), ``chunk``
        rows per transaction: a large prune never holds the database for long."""
        cutoff = time.time() - older_than_hours * 3600
        table, pruned = self.table, 0
        while True:
            with engine.begin() as conn:
                oldest = (
                    select(table.c.consumer, table.c.event_id)
                    .where(table.c.consumer == self.consumer, table.c.received_at < cutoff)
                    .limit(chunk)
                )
                count = conn.execute(
                    delete(table).where(tuple_(table.c.consumer, table.c.event_id).in_(oldest))
                ).rowcount
            pruned += count or 0
            if (count or 0) < chunk:
                return pruned
