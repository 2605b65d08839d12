"""Schema creation, explicit and versioned: two Alembic histories in every service database.

The engine's own tables (engine.store.db: inbox, outbox, positions, rebuild, parked) have the
engine's history (engine.store.migrations.versions), recorded in their own version table,
``pokesaga_engine_version``. The service's tables have the service's history (its ``migrations``
folder), recorded in Alembic's ``alembic_version``. ``upgrade`` brings the engine's up first, then
the service's, in one transaction: a change to the engine's tables is one engine revision, and no
saga changes.

``pokesaga db upgrade SERVICE`` runs it, and so does every service at start. Two instances
starting at once against one PostgreSQL database take turns (an advisory lock); on SQLite the
write lock does the same.

A database made before the engine kept its own history (a service's revisions 0001 to 0004 used
to make the engine's tables too) is upgraded in place, nothing copied, nothing lost: the engine's
tables are there but not its version, so the engine's version is stamped at the revision its
tables are at (read from the tables themselves, whatever the service's revision ids were), and
the engine's later revisions run from there. The service keeps its revision: the revisions that
made the engine's tables stay in each service's history with no body, so a database at one of
them stands where it stood, and an older pokesaga deployed again (a rolled back deploy) finds
the revision it knows and the tables it made, and starts with no step. A database made by an even
earlier pokesaga, with the same tables but no version at all, is adopted at the first revisions,
then upgraded; one whose tables differ is refused with a message, never patched up.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text
from sqlalchemy.pool import StaticPool

from engine.saga import Service
from engine.store import db
from engine.store.db import SchemaMismatch
from engine.store.migrations.versions import engine_0001_inbox_outbox
from engine.worker import rebuild

HERE = Path(__file__).parent / "migrations"
ENGINE_VERSIONS = HERE / "versions"
ENGINE_VERSION_TABLE = "pokesaga_engine_version"


@dataclass(frozen=True)
class Revisions:
    """Where a service database stands: the service's revision and the engine's (None: none yet)."""

    service: str | None
    engine: str | None

    @property
    def empty(self) -> bool:
        return self.service is None and self.engine is None

    def __str__(self) -> str:
        return "nothing" if self.empty else f"{self.service or 'none'} + {self.engine or 'none'}"


def _config(versions: Path, metadata: MetaData, version_table: str, connection: Connection | None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["metadata"] = metadata
    cfg.attributes["version_table"] = version_table
    cfg.attributes["connection"] = connection
    return cfg


def config(service: Service, connection: Connection | None = None) -> Config:
    """Alembic's configuration for ``service``'s own history: its revisions, its tables."""
    return _config(service.migrations, service.metadata, "alembic_version", connection)


def engine_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the engine's history: its revisions, its tables, its version table."""
    return _config(ENGINE_VERSIONS, db.METADATA, ENGINE_VERSION_TABLE, connection)


def head(service: Service) -> str | None:
    """The newest revision of ``service``'s own history."""
    return ScriptDirectory.from_config(config(service)).get_current_head()


def engine_head() -> str | None:
    """The newest revision of the engine's history."""
    return ScriptDirectory.from_config(engine_config()).get_current_head()


def heads(service: Service) -> Revisions:
    return Revisions(head(service), engine_head())


def _revisions(conn: Connection) -> Revisions:
    return Revisions(
        MigrationContext.configure(conn).get_current_revision(),
        MigrationContext.configure(conn, opts={"version_table": ENGINE_VERSION_TABLE}).get_current_revision(),
    )


def current(engine: Engine) -> str | None:
    """The revision of the service's own history the database is at."""
    return revisions(engine).service


def revisions(engine: Engine) -> Revisions:
    """The revisions, the service's and the engine's, the database is at."""
    with engine.connect() as conn:
        return _revisions(conn)


def upgrade(engine: Engine, service: Service) -> tuple[Revisions, Revisions]:
    """Bring the database to the newest revisions, the engine's then the service's; (before, after)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            key = zlib.crc32(f"pokesaga:{service.name}".encode())
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        before = _revisions(conn)
        if before.engine is None and inspect(conn).has_table("inbox"):
            before = _adopt(conn, service, before)
        command.upgrade(engine_config(conn), "head")
        command.upgrade(config(service, conn), "head")
        after = _revisions(conn)
        if before.empty:
            # Created empty: whatever the service did before is lost. Marked in the same
            # transaction as the tables, so no start, crash or second instance can miss it.
            rebuild.mark_created(conn, service)
    return before, after


def downgrade(engine: Engine, service: Service, to: Revisions) -> Revisions:
    """Take the database back to ``to``: the service's history first, then the engine's ("base": none)."""
    with engine.begin() as conn:
        command.downgrade(config(service, conn), to.service or "base")
        command.downgrade(engine_config(conn), to.engine or "base")
        return _revisions(conn)


def _adopt(conn: Connection, service: Service, before: Revisions) -> Revisions:
    """The engine's tables, without the engine's version: made before the engine kept its own history."""
    if before.service is None:
        # Made by create_all before migrations existed: adopted only if its tables are exactly
        # the first revisions' (the models' but for the tables later revisions added).
        differences = compare_metadata(MigrationContext.configure(conn), revision_0001(service))
        if differences:
            raise SchemaMismatch(
                f"{service.name}: the database {conn.engine.url.render_as_string()} was made by an older pokesaga "
                f"and its tables differ from revision 0001 ({differences[0]!r:.120}); move it away, then rebuild "
                f"it with 'pokesaga replay {service.name} --to-earliest' and a restart"
            )
        cfg = config(service, conn)
        command.stamp(cfg, ScriptDirectory.from_config(cfg).get_base() or "base")
    command.stamp(engine_config(conn), engine_revision_of_tables(conn))
    return _revisions(conn)


def new_revision(service: Service, message: str) -> Path | None:
    """Write ``service``'s next revision: what its tables as declared (``service.metadata``) add to
    its history, by Alembic's autogenerate on a scratch database at the newest revisions. The file's
    path; None when the history already makes the tables as declared. Read it before committing it:
    autogenerate cannot tell a renamed column from one dropped and one added."""
    if not message.strip() or not message.isprintable() or '"' in message or "\\" in message or len(message) > 200:
        raise ValueError(
            f"a revision's message is one line of at most 200 characters, no quote or backslash: {message!r:.80}"
        )
    service.migrations.mkdir(parents=True, exist_ok=True)
    scratch = db.make_engine("sqlite://", poolclass=StaticPool)
    try:
        upgrade(scratch, service)
        with scratch.begin() as conn:
            own = set(service.metadata.tables)

            def include(_obj: object, name: str | None, kind: str, _reflected: bool, _compare: object) -> bool:
                return kind != "table" or name in own

            opts = {"include_object": include, "compare_type": True}
            if not compare_metadata(MigrationContext.configure(conn, opts=opts), service.metadata):
                return None
            cfg = config(service, conn)
            cfg.attributes["include_object"] = include
            before = ScriptDirectory.from_config(cfg).get_current_head()
            number = int(before) + 1 if before and before.isdigit() else 1 if before is None else None
            script = command.revision(
                cfg, message=message, autogenerate=True, rev_id=f"{number:04d}" if number else None
            )
    finally:
        scratch.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def engine_revision_of_tables(conn: Connection) -> str:
    """The engine revision the engine's tables are at, read from the tables (frozen, like a
    revision: only the revisions made before the engine kept its own version need telling apart)."""
    found = inspect(conn)
    if found.has_table("positions"):
        topic_id = any(column["name"] == "topic_id" for column in found.get_columns("positions"))
        return "engine_0004" if topic_id else "engine_0003"
    return "engine_0002" if found.has_table("rebuild") else "engine_0001"


def revision_0001(service: Service) -> MetaData:
    """The tables of ``service``'s database at its revision 0001 and engine_0001: its own, and the
    engine's as they were."""
    metadata = MetaData()
    for table in service.metadata.sorted_tables:
        table.to_metadata(metadata)
    engine_0001_inbox_outbox.tables(metadata)
    return metadata


def schema(service: Service) -> MetaData:
    """Every table of ``service``'s database at the newest revisions: its own and the engine's."""
    metadata = MetaData()
    for table in (*service.metadata.sorted_tables, *db.METADATA.sorted_tables):
        table.to_metadata(metadata)
    return metadata
