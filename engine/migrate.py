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
from sqlalchemy import Connection, Engine, inspect, text

from engine import rebuild
from engine.saga import Service

HERE = Path(__file__).parent / "migrations"
LATER_TABLES = ("rebuild", "parked")  # added by revision 0002 (engine.migrations.messaging_v2)


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
            context = MigrationContext.configure(conn, opts={"include_object": _in_revision_0001})
            differences = compare_metadata(context, service.metadata)
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


def _in_revision_0001(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    return not (type_ == "table" and name in LATER_TABLES)
