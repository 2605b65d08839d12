"""A service's next revision written from its tables as declared (engine.store.migrate.new_revision):
the first makes its tables, a column added later is the next, and nothing new writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, inspect
from sqlalchemy.pool import StaticPool

from engine.saga import Service
from engine.store import migrate
from engine.store.db import make_engine


class Notes:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn


def notes_service(migrations: Path, *extra: Column[Any]) -> Service:
    metadata = MetaData()
    Table("notes", metadata, Column("saga_id", String(200), primary_key=True), Column("text", String(80)), *extra)
    return Service("notes", Notes, metadata=metadata, migrations=migrations)


def columns(service: Service) -> dict[str, list[str]]:
    engine = make_engine("sqlite://", poolclass=StaticPool)
    migrate.upgrade(engine, service)
    with engine.connect() as conn:
        found = inspect(conn)
        return {t: [c["name"] for c in found.get_columns(t)] for t in found.get_table_names() if t == "notes"}


def test_revisions_follow_the_declared_tables(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    first = migrate.new_revision(notes_service(folder), "notes: its own tables")
    assert first is not None and first.name.startswith("0001_")
    assert columns(notes_service(folder)) == {"notes": ["saga_id", "text"]}
    assert migrate.new_revision(notes_service(folder), "nothing new") is None

    grown = notes_service(folder, Column("stars", Integer, nullable=True))
    second = migrate.new_revision(grown, "notes: stars")
    assert second is not None and second.name.startswith("0002_")
    assert "down_revision = '0001'" in second.read_text()
    assert columns(grown) == {"notes": ["saga_id", "text", "stars"]}
    assert sorted(p.name[:4] for p in folder.glob("*.py")) == ["0001", "0002"]


@pytest.mark.parametrize("message", ['evil """ quote', "path C:\\x\\new", "two\nlines", "", "x" * 201])
def test_a_message_that_would_not_make_a_revision_file_is_refused_and_nothing_is_written(
    tmp_path: Path, message: str
) -> None:
    folder = tmp_path / "migrations"
    with pytest.raises(ValueError, match="a revision's message is one line"):
        migrate.new_revision(notes_service(folder), message)
    assert not list(folder.glob("*.py"))
