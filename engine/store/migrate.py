"""Schema creation, explicit and versioned: one Alembic history per service database.

``pokesaga db upgrade SERVICE`` runs it, and so does every service at start. Two
instances starting at once against one PostgreSQL database take turns (an advisory
lock); on SQLite the write lock does the same. A database made by an earlier pokesaga
with the same tables but no version is adopted at the first revision, then upgraded; one
whose tables differ is refused with a message, never patched up.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

from engine.saga import Service
from engine.store.migrations import messaging_v1
from engine.worker import rebuild

HERE = Path(__file__).parent / "migrations"
RUNTIME_TABLES = ("inbox", "outbox", "rebuild", "parked", "positions")  # the engine's, in every service database


class SchemaMismatch(Exception):
    """A database whose tables pokesaga cannot take over as they are; the message says what to do."""


def config(service: Service, connection: Connection | None = None) -> Config:
    """Alembic's configuration for ``service``: the engine's environment, the service's revisions."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", str(service.migrations))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["metadata"] = service.metadata
    cfg.attributes["connection"] = connection
    return cfg


def head(service: Service) -> str | None:
    return ScriptDirectory.from_config(config(service)).get_current_head()


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, service: Service) -> tuple[str | None, str | None]:
    """Bring the service's database to the newest revision; (revision before, revision after)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            key = zlib.crc32(f"pokesaga:{service.name}".encode())
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        before = MigrationContext.configure(conn).get_current_revision()
        cfg = config(service, conn)
        created = before is None
        if before is None and inspect(conn).has_table("inbox"):
            # Made by create_all before migrations existed: adopted only if its tables are
            # exactly revision 0001's (the models' but for the tables later revisions added).
            created = False
            differences = compare_metadata(MigrationContext.configure(conn), revision_0001(service))
            if differences:
                raise SchemaMismatch(
                    f"{service.name}: the database {engine.url.render_as_string()} was made by an older pokesaga "
                    f"and its tables differ from revision 0001 ({differences[0]!r:.120}); move it away, then rebuild "
                    f"it with 'pokesaga replay {service.name} --to-earliest' and a restart"
                )
            first = ScriptDirectory.from_config(cfg).get_base() or "base"
            command.stamp(cfg, first)
            before = first
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(conn).get_current_revision()
        if created:
            # Created empty: whatever the service did before is lost. Marked in the same
            # transaction as the tables, so no start, crash or second instance can miss it.
            rebuild.mark_created(conn, service)
    return before, after


def revision_0001(service: Service) -> MetaData:
    """The tables of ``service``'s database at revision 0001: its own, and the runtime's as they were."""
    metadata = MetaData()
    for table in service.metadata.sorted_tables:
        if table.name not in RUNTIME_TABLES:
            table.to_metadata(metadata)
    messaging_v1.tables(metadata)
    return metadata
