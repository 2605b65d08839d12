"""The inbox: what a participant has applied, one row per (consumer, event id), written in the same
local transaction as the state change and the outbox rows, so a redelivered record is a duplicate
and changes nothing (eventsourcing's tracking record, by another name).

It also answers the identity questions asked of each batch: was this event id applied, for
which saga and type; has this saga already had an event of this type under another id. A record
refused at the door is kept by its coordinates (``dead:<topic>:<partition>:<offset>``, type
``dead_letter``), so replaying the topic does not dead-letter it twice. Rows older than the
inbox retention are pruned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import BindParameter, Connection, Engine, Select, Table, bindparam, delete, literal, select, union_all

DEAD_LETTER = "dead_letter"  # the type of a refused record's row
PARKED = "parked"  # the type of a parked record's row in ``applied`` (engine.parked)


class Record(Protocol):
    topic: str
    partition: int
    offset: int


def marker(record: Record) -> str:
    """The inbox key of a refused record: its coordinates."""
    return f"dead:{record.topic}:{record.partition}:{record.offset}"


class Inbox:
    """One consumer's rows in its service's ``inbox`` table."""

    def __init__(self, table: Table, consumer: str, parked: Table | None = None) -> None:
        self.table = table
        self.consumer = consumer
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

    def row(self, key: str, saga_id: str, type_: str, record: Record) -> dict[str, Any]:
        """The row saying ``key`` (an event id, or a refused record's marker) was applied now."""
        return {
            "consumer": self.consumer,
            "event_id": key,
            "saga_id": saga_id,
            "type": type_,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "received_at": time.time(),
        }

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self.table.insert(), rows)

    def prune(self, engine: Engine, older_than_hours: float) -> int:
        """Forget events applied more than ``older_than_hours`` ago (see inbox_retention_hours)."""
        cutoff = time.time() - older_than_hours * 3600
        with engine.begin() as conn:
            query = delete(self.table).where(self.table.c.consumer == self.consumer, self.table.c.received_at < cutoff)
            return conn.execute(query).rowcount or 0
