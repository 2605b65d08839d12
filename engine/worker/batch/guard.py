"""The database guard: is the database a participant writes to still the one it started on?

A database lost, restored or replaced under a running service (its tables dropped, a SQLite
file deleted or put back from a backup) must not be written to as if nothing happened: the
participant rebuilds (engine.worker.rebuild). After an error that may mean the database was lost
(unavailable, an optimistic pass failing, any new connection), the next transaction first checks;
otherwise, nothing is checked and a batch costs nothing more. A PostgreSQL database dropped and
created again is only a reconnection, so it is checked too.
"""

from __future__ import annotations

import os

from sqlalchemy import Connection, Engine, Table, inspect, select
from sqlalchemy import event as sa_event

from engine.worker.batch.errors import RebuildRequired
from engine.worker.rebuild import CREATED


class DatabaseGuard:
    """Raises ``RebuildRequired`` when the participant's database is no longer its own."""

    def __init__(self, name: str, engine: Engine, rebuild_table: Table) -> None:
        self.name = name
        self.engine = engine
        self.rebuild_table = rebuild_table
        self.suspect = True  # checked at the first transaction
        self.watched = False  # engine.worker.run sets it for a database the service keeps
        self._file = database_file(engine)  # SQLite: the file, and which file it was at the start
        sa_event.listen(engine, "connect", self._connected)

    def _connected(self, *_: object) -> None:
        self.suspect = True

    def doubt(self) -> None:
        """An error that may mean the database was lost: check before the next write."""
        self.suspect = True

    def trusted(self) -> None:
        """A transaction committed: the database is the one checked."""
        self.suspect = False

    def check_file(self) -> None:
        """SQLite: ``RebuildRequired`` if the database file was deleted or replaced since the start
        (the open connections would go on writing to a file no one will ever read)."""
        if self.watched and self._file is not None and database_file(self.engine) != self._file:
            raise RebuildRequired(f"{self.name}: its database file was deleted or replaced")

    def check(self, conn: Connection, rebuilding: bool, always: bool = False) -> None:
        """``RebuildRequired`` if the database lost its tables or was marked for a rebuild since the
        start; checked when in doubt (or ``always``)."""
        if not self.watched or not (always or self.suspect):
            return
        self.check_file()
        if not inspect(conn).has_table(self.rebuild_table.name):
            raise RebuildRequired(f"{self.name}: its database has lost its tables")
        table = self.rebuild_table
        marked = {consumer: positioned for consumer, positioned in conn.execute(
            select(table.c.consumer, table.c.targets.is_not(None)))}  # fmt: skip
        if CREATED in marked or (self.name in marked and not (rebuilding and marked[self.name])):
            raise RebuildRequired(f"{self.name}: its database was replaced by an empty or restored one")


def database_file(engine: Engine) -> tuple[str, int, int] | None:
    """SQLite: (path, device, inode) of the database file, (path, 0, 0) when it is gone; else None."""
    if engine.url.get_backend_name() != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    path = str(engine.url.database)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return (path, 0, 0)
    return (path, found.st_dev, found.st_ino)
