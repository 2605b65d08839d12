"""The services' databases in tests: SQLite files by default, PostgreSQL when
``POKESAGA_TEST_POSTGRES`` holds an admin URL (``make test`` sets it for its second pass;
``scripts/postgres-up`` starts a server and prints one).

Every cluster of services under test gets databases of its own, so the suites on
PostgreSQL are as isolated as they are on SQLite files in a temporary folder.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import Engine, MetaData, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from capture.settings import SERVICES
from engine.settings import Settings
from engine.store.db import make_engine

ADMIN_URL = os.environ.get("POKESAGA_TEST_POSTGRES") or None
BACKEND = "postgresql" if ADMIN_URL else "sqlite"
CREATED: list[str] = []  # dropped when the session ends
S = TypeVar("S", bound=Settings)


def _admin() -> Engine:
    assert ADMIN_URL is not None
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


def database_urls(label: str, services: Iterable[str] = SERVICES) -> dict[str, Any]:
    """Settings fields giving each of ``services`` (the capture saga's by default) a new, empty
    PostgreSQL database; {} on SQLite."""
    if ADMIN_URL is None:
        return {}
    prefix = f"t_{re.sub(r'[^a-z0-9]', '_', label.lower())[:30]}_{uuid.uuid4().hex[:8]}"
    admin = _admin()
    urls = {}
    try:
        with admin.connect() as conn:
            for service in services:
                conn.execute(text(f'CREATE DATABASE "{prefix}_{service}"'))
                CREATED.append(f"{prefix}_{service}")
                urls[f"{service}_db_url"] = (
                    make_url(ADMIN_URL).set(database=f"{prefix}_{service}").render_as_string(hide_password=False)
                )
    finally:
        admin.dispose()
    return urls


def drop_created() -> None:
    if ADMIN_URL is None or not CREATED:
        return
    admin = _admin()
    left = []
    try:
        with admin.connect() as conn:
            while CREATED:
                name = CREATED.pop()
                try:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                except DBAPIError as refused:  # clean-up only: say so, and go on with the others
                    left.append(f"{name} ({str(refused.orig).strip().splitlines()[0]})")
    finally:
        admin.dispose()
    if left:
        warnings.warn(f"test databases left on the server: {', '.join(left)}", stacklevel=1)


def with_databases(settings: S, label: str) -> S:
    """``settings`` with a database of their own for each service of their saga."""
    return settings.model_copy(update=database_urls(label, type(settings).SERVICES or SERVICES))


def engine(settings: Settings, service: str) -> Engine:
    return make_engine(settings.db_url(service))


def rows(settings: Settings, service: str, query: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows ``query`` returns from the service's database."""
    db = engine(settings, service)
    try:
        with db.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query), params)]
    finally:
        db.dispose()


def dump(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of every service, sorted."""
    found = {}
    for service in SERVICES:
        db = engine(settings, service)
        try:
            metadata = MetaData()
            metadata.reflect(db)
            with db.connect() as conn:
                for table in metadata.sorted_tables:
                    found[f"{service}.{table.name}"] = sorted(map(tuple, conn.execute(table.select())), key=repr)
        finally:
            db.dispose()
    return found


def lose(settings: Settings, service: str) -> None:
    """The service's database is gone, as a deleted file or a dropped database."""
    url = make_url(settings.db_url(service))
    if url.get_backend_name() == "sqlite":
        for path in (url.database + suffix for suffix in ("", "-wal", "-shm")):
            if os.path.exists(path):
                os.unlink(path)
        return
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()


def copy_database(name: str, backup: str, back: bool = False) -> None:
    """PostgreSQL: ``backup`` made a copy of database ``name`` (no one connected), or ``name`` restored from it."""
    admin = _admin()
    try:
        with admin.connect() as conn:
            source, target = (backup, name) if back else (name, backup)
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{target}" TEMPLATE "{source}"'))
            if target not in CREATED:
                CREATED.append(target)
    finally:
        admin.dispose()


def refuse_updates(settings: Settings, service: str, table: str, when: str, message: str) -> None:
    """A trigger that makes the database refuse the updates of ``table`` matching ``when``
    (a condition on NEW and OLD), as an integrity error: a change the database will not take."""
    db = engine(settings, service)
    try:
        with db.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(text(
                    f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} WHEN {when}"
                    f" BEGIN SELECT RAISE(ABORT, '{message}'); END"
                ))  # fmt: skip
            else:
                conn.execute(text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = 'check_violation'; END $$"
                ))  # fmt: skip
                conn.execute(text(
                    f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW WHEN ({when})"
                    " EXECUTE FUNCTION refuse()"
                ))  # fmt: skip
    finally:
        db.dispose()


def allow_updates(settings: Settings, service: str, table: str) -> None:
    db = engine(settings, service)
    try:
        with db.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(text("DROP TRIGGER refuse"))
            else:
                conn.execute(text(f"DROP TRIGGER refuse ON {table}"))
                conn.execute(text("DROP FUNCTION refuse()"))
    finally:
        db.dispose()
