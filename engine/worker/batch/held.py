"""One statement per table for a batch's inserts, instead of one per record.

The handlers of an optimistic pass (engine.worker.batch.optimistic) get this in place of the connection.
An INSERT of one row is held; the rows held for a table are sent together, as one executemany
(SQLAlchemy makes it a multi-row INSERT), before the first statement that reads or writes that
table, and at the end of the pass. A handler therefore reads what the batch's earlier records
wrote, as it would without this. What cannot be told apart (text, anything but a Core
statement) sends everything held first, and so does any other use of the connection. Rows held
for other tables stay held, unless a foreign key links their table to the one used.

An error from held rows names no record: it raises ``DeferredFailed``, and the batch is applied
again record by record, each in a savepoint and without holding anything, which finds the
record at fault.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

from sqlalchemy import CompoundSelect, Connection, Delete, Insert, Select, Table, Update
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.util import find_tables

KNOWN = (Select, CompoundSelect, Insert, Update, Delete)  # statements whose tables can be told; any other sends all
CACHE_LIMIT = 512  # statements whose tables are remembered (the handlers' are built once, with bind parameters)


class DeferredFailed(Exception):
    """Held rows failed when they were sent: no one record is known to be at fault."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Held:
    """What ``execute`` returns for an INSERT it held: nothing to read yet."""

    rowcount = 1


HELD = Held()


class DeferredInserts:
    """A connection that holds single-row INSERTs until their table is used, or ``flush``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._held: list[tuple[Insert, dict[str, Any]]] = []
        self._tables: set[Table] = set()

    def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        if (
            isinstance(statement, Insert)
            and isinstance(parameters, dict)
            and not kwargs
            and isinstance(statement.table, Table)
            and not statement._returning
            and not statement._multi_values
            and not statement._values
        ):
            self._held.append((statement, parameters))
            self._tables.add(statement.table)
            return HELD
        if self._held:
            if not isinstance(statement, KNOWN):
                self.flush()
            elif touched := _tables(statement) & self._tables:
                self.flush(_linked(touched, self._tables))
        return self._conn.execute(statement, parameters, **kwargs)

    def flush(self, tables: AbstractSet[Table] | None = None) -> None:
        """Send what is held for ``tables`` (all: None), in order: one executemany per run of rows for
        the same table and columns. Rows of other tables stay held."""
        if tables is None:
            held, self._held, self._tables = self._held, [], set()
        else:
            held = [h for h in self._held if h[0].table in tables]
            self._held = [h for h in self._held if h[0].table not in tables]
            self._tables -= tables
        start = 0
        try:
            while start < len(held):
                statement, first = held[start]
                end = start + 1
                while end < len(held) and held[end][0].table is statement.table and held[end][1].keys() == first.keys():
                    end += 1
                rows = [parameters for _, parameters in held[start:end]]
                self._conn.execute(statement, rows if len(rows) > 1 else rows[0])
                start = end
        except Exception as exc:
            raise DeferredFailed(exc) from exc

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._conn, name)


_known: dict[int, tuple[ClauseElement, frozenset[Table]]] = {}


def _linked(touched: AbstractSet[Table], held: AbstractSet[Table]) -> set[Table]:
    """``touched``, and the held tables a foreign key links to one of them (either way): what must
    be sent before a statement on ``touched`` runs."""
    linked = set(touched)
    for table in held - touched:
        if any(fk.column.table in touched for fk in table.foreign_keys) or any(
            fk.column.table is table for t in touched for fk in t.foreign_keys
        ):
            linked.add(table)
    return linked


def _tables(statement: ClauseElement) -> frozenset[Table]:
    """The tables ``statement`` reads or writes (remembered per statement object)."""
    found = _known.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1]
    tables = frozenset(t for t in find_tables(statement, include_crud=True, include_joins=True) if isinstance(t, Table))
    if len(_known) >= CACHE_LIMIT:
        _known.clear()
    _known[id(statement)] = (statement, tables)
    return tables
