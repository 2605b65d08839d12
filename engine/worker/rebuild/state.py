"""A service's rebuild, as rows of its database's ``rebuild`` table: which participants are
rebuilding, where each group re-reads from (``start``) and where its recorded history ends
(``targets``); ``CREATED`` marks a database created empty. Instances share the rows, so a second
instance, a restart or a crash carries a rebuild on from where it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from sqlalchemy import Connection, Engine, MetaData, Table, delete, insert, select, text, update

from engine.saga import Service
from engine.store.db import rebuild_tables

CREATED = "*"  # the row of a database created empty: every participant of the service rebuilds
Targets = dict[str, int]  # "topic:partition" -> end offset when the rebuild began
Start = dict[str, int]  # "topic:partition" -> the offset the group re-reads from


class RebuildRequired(Exception):
    """The participant's database was lost or replaced while it ran (its tables are gone, or it
    is marked for a new rebuild): nothing is applied; the participant must start its rebuild."""


def mark_created(conn: Connection, service: Service) -> None:
    """In the transaction that created ``service``'s tables: whatever it did before is lost."""
    table, _ = rebuild_tables(service.metadata)
    conn.execute(insert(table).values(consumer=CREATED, targets=None, start=None, replayed=False, since=time.time()))


@dataclass(frozen=True)
class Row:
    consumer: str
    targets: Targets | None  # None: the group is not positioned yet
    start: Start | None  # where the group is positioned; None: the earliest records
    rebuilt: bool  # its recorded history re-applied (the column ``replayed``)


class RebuildState:
    """A service's rebuild rows, in its database, for ``participants`` (every participant of the
    service, whichever of them this process runs)."""

    def __init__(self, engine: Engine, metadata: MetaData, participants: Sequence[str]) -> None:
        self.engine = engine
        self.table, _ = rebuild_tables(metadata)
        self.participants = list(participants)

    def rows(self) -> dict[str, Row]:
        with self.engine.connect() as conn:
            return {
                r.consumer: Row(r.consumer, r.targets, r.start, r.replayed) for r in conn.execute(select(self.table))
            }

    def expand(self) -> list[str]:
        """A database created empty: a row (not positioned yet) for every participant of the
        service that has none; the participants now rebuilding."""
        with self.engine.begin() as conn:
            self._lock(conn)  # two instances starting at once: one expands, the other sees it done
            present = {r.consumer for r in conn.execute(select(self.table.c.consumer))}
            if CREATED in present:
                missing = [p for p in self.participants if p not in present]
                if missing:
                    conn.execute(insert(self.table), [self._row(p, None) for p in missing])
                conn.execute(delete(self.table).where(self.table.c.consumer == CREATED))
                present |= set(missing)
        return [p for p in self.participants if p in present]

    def created(self) -> bool:
        """Was the database created empty, its participants' rows not written yet?"""
        with self.engine.connect() as conn:
            query = select(self.table.c.consumer).where(self.table.c.consumer == CREATED)
            return conn.execute(query).first() is not None

    def forget_created(self) -> bool:
        """Drop the mark of a database created empty (no rebuild wanted); whether there was one."""
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(self.table).where(self.table.c.consumer == CREATED)).rowcount)

    def begin(self, starts: dict[str, Start | None]) -> None:
        """These participants rebuild, their groups re-reading from ``starts`` (None: the earliest).
        The first process to start one of them moves its group there (``position``)."""
        with self.engine.begin() as conn:
            self._lock(conn)
            conn.execute(delete(self.table).where(self.table.c.consumer.in_(list(starts))))
            conn.execute(insert(self.table), [self._row(p, start) for p, start in starts.items()])

    def positioned(self, consumer: str, targets: Targets) -> bool:
        """The group is positioned; the rebuild's history ends at ``targets`` (the first to get here sets them)."""
        with self.engine.begin() as conn:
            query = update(self.table).where(self.table.c.consumer == consumer, self.table.c.targets.is_(None))
            return bool(conn.execute(query.values(targets=targets)).rowcount)

    @staticmethod
    def _row(consumer: str, start: Start | None) -> dict[str, object]:
        return {"consumer": consumer, "targets": None, "start": start, "replayed": False, "since": time.time()}

    def _lock(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":  # SQLite's write lock, taken at BEGIN, already does it
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"rebuild:{self.table.name}"})

    def mark_rebuilt(self, consumer: str) -> None:
        """``consumer`` has re-applied its recorded history."""
        with self.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.consumer == consumer).values(replayed=True))

    def finish(self) -> bool:
        """Over (True) once no row is left; the last participant to be rebuilt deletes them all."""
        with self.engine.begin() as conn:
            rows = list(conn.execute(select(self.table.c.consumer, self.table.c.replayed)))
            if rows and all(rebuilt and consumer != CREATED for consumer, rebuilt in rows):
                conn.execute(delete(self.table))
                return True
            return not rows


def encode(ends: dict[TopicPartition, int]) -> Targets:
    return {f"{tp.topic}:{tp.partition}": offset for tp, offset in ends.items()}


def decode(targets: Targets) -> dict[TopicPartition, int]:
    found = {}
    for key, offset in targets.items():
        topic, _, partition = key.rpartition(":")
        found[TopicPartition(topic, int(partition))] = int(offset)
    return found


def restore_start(conn: Connection, positions: Table, consumer: str) -> Start:
    """Where a database restored from a backup must re-read from: after the last record it had
    passed, partition by partition (applied, skipped or refused: its positions, engine.store.inbox)."""
    query = select(positions.c.topic, positions.c.partition, positions.c.offset).where(positions.c.consumer == consumer)
    return {f"{topic}:{partition}": int(offset) for topic, partition, offset in conn.execute(query)}
