"""The inbox: what a participant has applied, written in the same local transaction as the state
change and the outbox rows, so a record that comes again changes nothing.

Two records of what was applied, for the two ways a record comes again:

- **Positions** (eventsourcing's tracking record): per input partition, the offset after the
  last record whose fate was committed, and the id Kafka gave the topic they were read from. A
  record read again from the broker (redelivered after a crash or a rebalance, re-read after a
  reset of offsets or in a rebuild, at any age) sits below its partition's position on the same
  topic: a duplicate, known without a row of its own. One row per partition, whatever the traffic.
- **Event ids**, one row per (consumer, event id), for copies that come under *new* offsets: an
  outbox row published again (an instance died between publishing and deleting it; engine.worker.flusher),
  or a client sending an event twice. Those arrive within a short time of the first, so the rows
  are kept for a window (``inbox_retention_hours``, 24 h by default) and pruned, instead of for
  as long as the broker keeps records. The same rows answer the identity questions asked of each
  batch: was this event id applied, for which saga and type; has this saga already had an event
  of this type under another id. A record refused at the door is kept by its coordinates
  (``dead:<topic>:<partition>:<offset>``, type ``dead_letter``).

An offset is an identity only within one incarnation of its topic: a topic deleted and made
again starts its offsets over under a new topic id (engine.broker.topicids). A position recorded on
another incarnation is void: the loop reads the new one from its beginning (engine.worker.loop), and
its records are decided by their event ids. Nothing here compares clocks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite

from engine.wire.record import Record

DEAD_LETTER = "dead_letter"  # the type of a refused record's row
PARKED = "parked"  # the type of a parked record's row in ``applied`` (engine.store.parked)


# (the offset after the last record passed, the latest timestamp among them, the topic's id or
# None: recorded before topic ids were kept, or on a broker that has none)
Position = tuple[int, int, str | None]


def void(position: Position | None, topic_id: str | None) -> bool:
    """Was ``position`` recorded on another incarnation of its topic than ``topic_id`` (the topic's
    id now)? Unknown on either side (no ids kept yet, or a broker without them) is not void."""
    return position is not None and position[2] is not None and topic_id is not None and position[2] != topic_id


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
            located = (positions.c.topic, positions.c.partition, positions.c.offset, positions.c.timestamp,
                       positions.c.topic_id)  # fmt: skip
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
        return {(topic, partition): (offset, stamp, tid) for topic, partition, offset, stamp, tid in rows}

    def advance(
        self,
        conn: Connection,
        known: dict[tuple[str, int], Position],
        records: Iterable[Record],
        topic_ids: Mapping[str, str] = {},  # noqa: B006 (read only)
    ) -> None:
        """Move this consumer's positions past ``records`` (never back on one incarnation of a
        topic), in one statement. ``known``: the positions as read in this transaction;
        ``topic_ids``: each topic's id now (a position on another id starts again)."""
        passed: dict[tuple[str, int], Position] = {}
        for record in records:
            key, topic_id = (record.topic, record.partition), topic_ids.get(record.topic)
            position = passed.get(key, known.get(key))
            if position is None or void(position, topic_id):
                position = (-1, -1, topic_id)
            offset, stamp, recorded = position
            passed[key] = (max(offset, record.offset + 1), max(stamp, record.timestamp), topic_id or recorded)
        self._write(conn, passed)

    def restart(self, conn: Connection, starts: Mapping[tuple[str, int], tuple[str, int]]) -> None:
        """A topic made again: its partitions' positions start over at ``starts`` ((topic, partition)
        → (its new id, the offset its records begin at)), whatever was recorded before."""
        self._write(conn, {key: (offset, -1, topic_id) for key, (topic_id, offset) in starts.items()})

    def _write(self, conn: Connection, positions: Mapping[tuple[str, int], Position]) -> None:
        if self.positions_table is None or not positions:
            return
        rows = [
            {"consumer": self.consumer, "topic": topic, "partition": partition, "offset": offset, "timestamp": stamp,
             "topic_id": topic_id}
            for (topic, partition), (offset, stamp, topic_id) in positions.items()
        ]  # fmt: skip
        conn.execute(self._upsert(conn.dialect.name), rows)

    def _upsert(self, dialect: str) -> Any:
        """INSERT of a position, or on conflict its row moved forward (never back on one topic id; a new
        id replaces it); built once."""
        if dialect not in self._upserts:
            self._upserts[dialect] = self._build_upsert(dialect)
        return self._upserts[dialect]

    def _build_upsert(self, dialect: str) -> Any:
        table = self.positions_table
        assert table is not None
        statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        new = statement.excluded
        other = and_(new.topic_id.is_not(None), table.c.topic_id.is_not(None), table.c.topic_id != new.topic_id)
        return statement.on_conflict_do_update(
            index_elements=[table.c.consumer, table.c.topic, table.c.partition],
            set_={
                "offset": case((or_(other, table.c.offset < new.offset), new.offset), else_=table.c.offset),
                "timestamp": case(
                    (or_(other, table.c.timestamp < new.timestamp), new.timestamp), else_=table.c.timestamp
                ),  # fmt: skip
                "topic_id": func.coalesce(new.topic_id, table.c.topic_id),
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
