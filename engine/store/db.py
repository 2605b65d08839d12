"""Databases: one per service, SQLite (WAL) by default, any SQLAlchemy URL otherwise.

Every service database also holds the engine's own tables, on the engine's own MetaData
(``METADATA``) and made by the engine's own migrations (engine.store.migrate): the inbox (event
ids already applied, per consumer), the outbox (records to publish, per producer), the positions
(where each consumer stands on each partition), the rebuild (which of the service's participants
are re-applying their recorded history, see engine.worker.rebuild) and the parked records (records
held back until a rebuild ends, or retried later, in arrival order).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Connection, make_url

from engine.settings import check_database_url


class SchemaMismatch(Exception):
    """A database whose tables pokesaga cannot take over as they are; the message says what to do."""


METADATA = MetaData()
"""The engine's own tables, in every service database beside the service's: a service's MetaData
holds only its own, and its migrations only those (the engine's are in engine.store.migrations)."""

INBOX = Table(
    "inbox",
    METADATA,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("saga_id", String(200), nullable=False),
    Column("type", String(100), nullable=False),
    # When it was applied (epoch seconds): rows older than the inbox retention are pruned.
    Column("received_at", Float, nullable=False, index=True),
    Index("ix_inbox_consumer_saga", "consumer", "saga_id"),
)

OUTBOX = Table(
    "outbox",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("producer", String(100), nullable=False, index=True),
    Column("event_id", String(200), nullable=True),
    Column("topic", String(250), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    sqlite_autoincrement=True,  # an id is never handed out again (engine revision 0004)
)

# Per consumer and input partition, the offset after the last record whose fate was committed,
# the latest record timestamp among those, and the id of the topic they were read from
# (engine.store.inbox).
POSITIONS = Table(
    "positions",
    METADATA,
    Column("consumer", String(100), primary_key=True),
    Column("topic", String(250), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    # Kafka's id of the topic (its incarnation): a position is void on a topic made again.
    Column("topic_id", String(36), nullable=True),
    sqlite_with_rowid=False,
)

REBUILD = Table(
    "rebuild",
    METADATA,
    # A participant's name, or '*': the database was created empty (see engine.worker.rebuild).
    Column("consumer", String(100), primary_key=True),
    # {"topic:partition": end offset} when the rebuild began; NULL until a process has
    # positioned the consumer group (moved it to ``start``).
    Column("targets", JSON(none_as_null=True), nullable=True),
    # {"topic:partition": offset} where the group starts re-reading; NULL: the earliest records.
    Column("start", JSON(none_as_null=True), nullable=True),
    Column("replayed", Boolean, nullable=False, default=False),
    Column("since", Float, nullable=False),
)

PARKED = Table(
    "parked",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consumer", String(100), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("saga_id", String(200), nullable=False),
    Column("topic", String(250), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("reason", String(100), nullable=False),
    Column("parked_at", Float, nullable=False),
    # Attempts so far, when it is next due (set on each saga's head; NULL behind it), the last error.
    Column("attempts", Integer, nullable=False, default=0),
    Column("due_at", Float, nullable=True),
    Column("last_error", String(500), nullable=True),
    UniqueConstraint("consumer", "event_id", name="parked_once"),
    Index("ix_parked_consumer_saga", "consumer", "saga_id"),
    Index("ix_parked_consumer_id", "consumer", "id"),  # the oldest first, without a sort
    Index("ix_parked_consumer_due", "consumer", "due_at"),  # the heads due now, without a scan
    sqlite_autoincrement=True,  # an id is never handed out again (engine revision 0004)
)


# The helpers below take a service's MetaData, as they did when the engine's tables were added
# to it; they are the engine's own now, the same whichever service asks.


def messaging_tables(metadata: MetaData | None = None) -> tuple[Table, Table]:
    """The engine's inbox and outbox tables (``metadata`` is not used: they are the engine's)."""
    return INBOX, OUTBOX


def positions_table(metadata: MetaData | None = None) -> Table:
    """The engine's positions table (``metadata`` is not used: it is the engine's)."""
    return POSITIONS


def rebuild_tables(metadata: MetaData | None = None) -> tuple[Table, Table]:
    """The engine's rebuild and parked tables (``metadata`` is not used: they are the engine's)."""
    return REBUILD, PARKED


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and real transactions.

    A URL that cannot be parsed, or whose driver is missing or asynchronous, raises
    ValueError saying so (the settings refuse those first, naming the setting)."""
    check_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (savepoints need it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: two processes sharing one file
        # serialize instead of failing on a lock upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@functools.cache
def _select(table: Table, keys: tuple[str, ...], order_by: tuple[str, ...] = ()) -> Select[Any]:
    # Built once per shape, with bind parameters: SQLAlchemy then reuses the compiled SQL.
    return select(table).where(*(table.c[k] == bindparam(k) for k in keys)).order_by(*(table.c[c] for c in order_by))


def one_row(conn: Connection, table: Table, **where: Any) -> dict[str, Any] | None:
    """The row of ``table`` matching ``where`` (column=value), as a dict, or None."""
    row = conn.execute(_select(table, tuple(where)), where).first()
    return row._asdict() if row else None


def all_rows(conn: Connection, table: Table, order_by: tuple[str, ...], **where: Any) -> list[dict[str, Any]]:
    """Every row of ``table`` matching ``where``, in ``order_by`` order, as dicts."""
    return [row._asdict() for row in conn.execute(_select(table, tuple(where), order_by), where)]
