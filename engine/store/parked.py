"""Parked records: records a participant has taken from its topics (their offsets are committed)
but holds back, in its own database, to apply later in the order they arrived.

While a participant rebuilds (engine.worker.rebuild), a record it has no recorded decision for — one
that queued while its database was lost — is parked, and so is every later record of a saga
that has one parked: they are applied after every recorded record, on the rebuilt state.

A parked record is kept whole (key, value, headers, coordinates), so applying it later is
applying the record itself: the same fates, the same inbox row, the same identity checks.

Each saga's first parked record (its **head**) carries when it is due (``due_at``); the records
behind it carry none. Finding what to apply reads the heads due now from an index on (consumer,
due_at), then their sagas' records: its cost follows what is due, not what is parked. When a head
leaves, the record behind it becomes the head, due at once (``promote``). Row ids are never handed
out again (AUTOINCREMENT), so an id read earlier names the same row or none.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, func, or_, select, text, update

from engine.wire.codec import BadRecord, decode_envelope
from engine.wire.envelope import Envelope
from engine.wire.notices import MAX_ERROR
from engine.wire.record import Record

REBUILDING = "rebuilding"  # the reason a record is parked while its participant rebuilds
RETRYING = "retrying"  # its handler failed; tried again when due
WAITING = "waiting"  # behind its saga's parked record
NEWER_VERSION = "newer_version"  # its event's version is newer than this instance reads (engine.versions)


@dataclass
class ParkedRecord:
    """A parked record, as the loop hands records over (engine.broker.kafka.Record), with its row id."""

    id: int
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    attempts: int = 0  # failed tries so far
    saga_id: str = ""
    parked_at: float = 0.0  # epoch seconds
    reason: str = ""  # why it is parked (REBUILDING, RETRYING, WAITING, NEWER_VERSION)


class Parked:
    """One consumer's rows in its service's ``parked`` table."""

    def __init__(self, table: Table, consumer: str, horizon: float = 86_400) -> None:
        self.table = table
        self.consumer = consumer
        # No record is put off further than this (the retry policy's longest wait): one due later
        # than now + horizon was parked before the wall clock stepped back, and is due now.
        self.horizon = horizon + 1
        t, mine = table, table.c.consumer == bindparam("consumer")
        order = (t.c.due_at, t.c.id)
        limit: Any = bindparam("limit")
        self._heads_due = select(t.c.saga_id).where(mine, t.c.due_at <= bindparam("now")).order_by(*order).limit(limit)
        # Put off further than any retry waits: parked before the wall clock stepped back, due now.
        self._heads_skewed = select(t.c.saga_id).where(mine, t.c.due_at > bindparam("horizon")).order_by(*order)
        self._heads_skewed = self._heads_skewed.limit(limit)
        sagas: Any = bindparam("sagas", expanding=True)
        # In (saga, id) order, which the index on (consumer, saga_id) holds: ordered by id alone,
        # SQLite walked every parked row of the consumer to spare itself a sort.
        self._of_sagas = select(t).where(mine, t.c.saga_id.in_(sagas)).order_by(t.c.saga_id, t.c.id).limit(limit)
        self._next_due = select(func.min(t.c.due_at)).where(mine, t.c.due_at.is_not(None))
        promoted: Any = bindparam("promoted", expanding=True)
        first = select(func.min(t.c.id)).where(t.c.consumer == bindparam("of"), t.c.saga_id.in_(promoted))
        first = first.group_by(t.c.saga_id)
        self._promote = update(t).where(t.c.id.in_(first.scalar_subquery()), t.c.due_at.is_(None))

    def row(
        self,
        record: Record,
        envelope: Envelope,
        reason: str,
        attempts: int = 0,
        due_at: float | None = None,
        last_error: str | None = None,
    ) -> dict[str, Any]:
        """The row of ``record`` parked for ``reason``; a head (not ``WAITING`` behind its saga's
        parked record) is due at ``due_at``, else now."""
        if due_at is None and reason != WAITING:
            due_at = time.time()
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
            "attempts": attempts,
            "due_at": due_at,
            "last_error": None if last_error is None else last_error[:MAX_ERROR],
        }

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self.table.insert(), rows)

    def due(self, conn: Connection, now: float, limit: int) -> list[ParkedRecord]:
        """Up to ``limit`` records to apply now: each saga's head that is due, and the records
        queued behind it, in arrival order."""
        params = {"consumer": self.consumer, "now": now, "horizon": now + self.horizon, "limit": limit}
        sagas = list(dict.fromkeys([*conn.execute(self._heads_due, params).scalars(),
                                    *conn.execute(self._heads_skewed, params).scalars()]))  # fmt: skip
        if not sagas:
            return []
        rows = [row._asdict() for row in conn.execute(self._of_sagas, params | {"sagas": sorted(sagas)})]
        rows.sort(key=lambda r: r["id"])  # in arrival order
        due = self._due_heads(rows, now)
        return [_record(r) for r in rows if r["saga_id"] in due]

    def _due_heads(self, rows: list[dict[str, Any]], now: float) -> set[str]:
        """The sagas among ``rows`` (in id order) whose first row is due."""
        heads: dict[str, dict[str, Any]] = {}
        for row in rows:
            heads.setdefault(row["saga_id"], row)
        return {saga for saga, head in heads.items() if _is_due(head["due_at"], now, now + self.horizon)}

    def promote(self, conn: Connection, sagas: Iterable[str], now: float) -> None:
        """Records left behind a head that went: each such saga's first record is its head, due ``now``."""
        sagas = sorted(set(sagas))
        if sagas:
            conn.execute(
                self._promote.values(due_at=bindparam("now")), {"of": self.consumer, "promoted": sagas, "now": now}
            )

    def types(self, conn: Connection, event_ids: Iterable[str]) -> dict[str, str]:
        """The event type of each of these parked records (read from the record kept)."""
        t = self.table
        query = select(t.c.event_id, t.c.value).where(t.c.consumer == self.consumer, t.c.event_id.in_(list(event_ids)))
        found = {}
        for event_id, value in conn.execute(query):
            try:
                found[event_id] = decode_envelope(value).type
            except BadRecord:  # parked as it was read, so readable; if not, it matches no type
                found[event_id] = "?"
        return found

    def next_due(self, conn: Connection) -> float | None:
        """When the next record waiting to be retried is due; None when none is."""
        found = conn.execute(self._next_due, {"consumer": self.consumer}).scalar()
        return None if found is None else float(found)

    def still_due(self, conn: Connection, ids: Iterable[int], now: float) -> set[int]:
        """Of ``ids`` (read as due, before the lock), those that may be applied now, under the lock
        (``lock``): rows still parked, of a saga whose head is due, with every row of the saga
        before them among ``ids`` too. What another instance applied, or put off, meanwhile is
        left out, and so is every record of its saga behind a head put off: none overtakes it."""
        t, ids = self.table, set(ids)
        sagas = select(t.c.saga_id).where(t.c.id.in_(ids)).scalar_subquery()
        query = (
            select(t.c.id, t.c.saga_id, _due(t, now, now + self.horizon).label("due"))
            .where(t.c.consumer == self.consumer, t.c.saga_id.in_(sagas))
            .order_by(t.c.id)
        )
        allowed: set[int] = set()
        blocked: set[str] = set()
        seen: set[str] = set()
        for row_id, saga_id, due in conn.execute(query):
            first = saga_id not in seen
            seen.add(saga_id)
            if saga_id in blocked or row_id not in ids or (first and not due):
                blocked.add(saga_id)  # its head is not due, or a record before this one is not ours
                continue
            allowed.add(row_id)
        return allowed

    def retry_later(
        self,
        conn: Connection,
        row_id: int,
        attempts: int,
        due_at: float,
        error: str,
        reason: str = RETRYING,
        parked_at: float | None = None,
    ) -> None:
        """A parked record failed again (or is held again): its attempts, when it is next due, the error;
        ``parked_at``: parked anew for ``reason`` since then (held for a newer version after waiting)."""
        t = self.table
        values: dict[str, Any] = {"reason": reason, "attempts": attempts, "due_at": due_at}
        if parked_at is not None:
            values["parked_at"] = parked_at
        conn.execute(
            update(t)
            .where(t.c.id == row_id, t.c.consumer == self.consumer)
            .values(**values, last_error=error[:MAX_ERROR])
        )

    def wake(self, engine: Engine, reason: str) -> int:
        """Every head parked for ``reason`` is due now (an upgraded instance starting takes what its
        older siblings held for it, without waiting for their next look); how many."""
        t = self.table
        query = update(t).where(t.c.consumer == self.consumer, t.c.reason == reason, t.c.due_at.is_not(None))
        with engine.begin() as conn:
            return conn.execute(query.values(due_at=time.time())).rowcount or 0

    def lock(self, conn: Connection) -> None:
        """Take this consumer's parked records for the transaction (PostgreSQL: an advisory lock;
        SQLite's write lock, taken when the transaction begins, already does it)."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"parked:{self.consumer}"})

    def delete(self, conn: Connection, ids: Iterable[int]) -> None:
        t = self.table
        conn.execute(delete(t).where(t.c.id.in_(list(ids)), t.c.consumer == self.consumer))

    def count(self, engine: Engine) -> int:
        with engine.connect() as conn:
            query = select(func.count()).select_from(self.table).where(self.table.c.consumer == self.consumer)
            return int(conn.execute(query).scalar_one())


def _is_due(due_at: float | None, now: float, horizon: float) -> bool:
    """``_due`` for a row in hand."""
    return due_at is None or due_at <= now or due_at > horizon


def _due(t: Any, now: Any, horizon: Any) -> Any:
    """A row is due: a record waiting behind no retry, one whose next attempt has come, or one
    put off further than any retry waits (the clock stepped back)."""
    return or_(t.c.due_at.is_(None), t.c.due_at <= now, t.c.due_at > horizon)


def _encode(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _record(row: dict[str, Any]) -> ParkedRecord:
    headers = [(str(k), None if v is None else base64.b64decode(v)) for k, v in row["headers"]]
    return ParkedRecord(
        row["id"], row["topic"], row["partition"], row["offset"], row["timestamp"], row["key"], row["value"], headers,
        row["attempts"] or 0, row["saga_id"], row["parked_at"] or 0.0, row["reason"] or "",
    )  # fmt: skip
