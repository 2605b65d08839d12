"""The handlers' inserts held and sent one statement per table (engine.worker.batch.held): same
results as one by one; and a batch whose held insert fails is applied again record by record."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, create_engine, func, select, text

from engine.worker.batch.held import HELD, DeferredFailed, DeferredInserts
from engine.worker.batch.processor import BatchProcessor
from tests.toy.kit import Rec, applied, first_done, tally
from tests.toy.tables import marks

metadata = MetaData()
things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("name", String(20)))
others = Table("others", metadata, Column("id", Integer, primary_key=True))
children = Table(
    "children", metadata, Column("id", Integer, primary_key=True), Column("thing", ForeignKey("things.id"))
)


@pytest.fixture
def conn(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection


def count(conn, table: Table) -> int:  # type: ignore[no-untyped-def]
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_inserts_are_held_until_their_table_is_read_and_sent_in_order(conn) -> None:  # type: ignore[no-untyped-def]
    held = DeferredInserts(conn)
    assert held.execute(things.insert(), {"id": 1, "name": "a"}) is HELD
    held.execute(things.insert(), {"id": 2, "name": "b"})
    assert held.execute(select(func.count()).select_from(others)).scalar_one() == 0  # another table: still held
    assert count(conn, things) == 0
    assert held.execute(select(things.c.name).order_by(things.c.id)).scalars().all() == ["a", "b"]  # read: sent
    held.execute(things.insert(), {"id": 3, "name": "c"})
    held.execute(text("SELECT 1"))  # cannot be told apart: sends everything
    assert count(conn, things) == 3
    held.execute(things.insert(), {"id": 4, "name": "d"})
    held.execute(others.insert(), {"id": 1})
    held.flush()
    assert (count(conn, things), count(conn, others)) == (4, 1)


def test_only_the_tables_a_statement_uses_are_sent_and_those_a_foreign_key_links_to_them(conn) -> None:  # type: ignore[no-untyped-def]
    held = DeferredInserts(conn)
    held.execute(things.insert(), {"id": 1, "name": "a"})
    held.execute(others.insert(), {"id": 1})
    held.execute(children.insert(), {"id": 1, "thing": 1})
    held.execute(children.update().where(children.c.id == 1).values(thing=1))  # children, and things it refers to
    assert (count(conn, things), count(conn, children), count(conn, others)) == (1, 1, 0)
    held.execute(children.insert(), {"id": 2, "thing": 1})
    held.execute(select(things.c.id))  # nothing of things is held: children's row waits
    assert (count(conn, children), count(conn, others)) == (1, 0)
    held.flush()
    assert (count(conn, children), count(conn, others)) == (2, 1)


def test_a_held_insert_that_fails_names_no_record(conn) -> None:  # type: ignore[no-untyped-def]
    held = DeferredInserts(conn)
    held.execute(things.insert(), {"id": 1, "name": "a"})
    held.execute(things.insert(), {"id": 1, "name": "again"})
    with pytest.raises(DeferredFailed) as failed:
        held.execute(select(things.c.id))
    assert type(failed.value.error).__name__ == "IntegrityError"


async def test_a_batch_whose_held_insert_fails_is_applied_record_by_record_and_blames_the_right_one(
    second: BatchProcessor,
) -> None:
    """A saga's event again under a new id after its inbox row was pruned (the window passed): its
    mark row exists, so its held insert fails when sent. The batch is applied again record by
    record: that record alone fails (and is parked to be retried, the step's policy); the others
    are applied once, in the same batch."""
    await applied(second, [Rec(first_done("late-1", name="Lia").to_json())])
    assert second.prune_inbox(older_than_hours=0) == 1
    again = first_done("late-1", name="Lia").model_copy(update={"id": "late-1-copy"})
    batch = [Rec(first_done("late-2", name="Lib").to_json()), Rec(again.to_json()), Rec(first_done("late-3").to_json())]
    result = await applied(second, batch)
    assert result.applied == {"FirstDone": 2} and result.dead_letters == []
    assert (result.retries, result.parked) == (["IntegrityError"], 1)
    assert [row.key for row in result.outbox if row.type != "pokesaga.StepRetrying"] == [b"late-2", b"late-3"]
    assert tally(second, "Lib") == 1
    with second.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(marks)).scalar_one() == 3
