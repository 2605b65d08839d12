"""The outbox (engine.store.outbox) hands back each row's id, in insert order, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from engine.store.db import messaging_tables
from engine.store.outbox import Outbox
from tests import databases
from tests.toy.kit import engine_for
from tests.toy.saga import Settings
from tests.toy.tables import metadata


def test_the_ids_handed_back_are_the_rows_even_after_the_newest_were_deleted(tmp_path: Path) -> None:
    settings = databases.with_databases(Settings(data_dir=tmp_path), tmp_path.name)
    engine = engine_for("first", settings)
    _, table = messaging_tables(metadata)
    outbox = Outbox(table, "first")

    def rows(prefix: str, n: int) -> list[dict[str, object]]:
        return [{"producer": "first", "event_id": f"{prefix}{k}", "topic": "t", "key": b"k", "value": b"v",
                 "headers": [["ce_type", "X"]]} for k in range(n)]  # fmt: skip

    def written(n: int, prefix: str) -> None:
        with engine.begin() as conn:
            handed = outbox.insert(conn, rows(prefix, n))
            found = dict(conn.execute(select(table.c.id, table.c.event_id).where(table.c.producer == "first")).all())
        assert [found[row.id] for row in handed] == [f"{prefix}{k}" for k in range(n)]
        outbox.mark_sent(engine, [row.id for row in handed[n // 2 :]])  # the newest go: the largest id drops

    for round_, n in enumerate((10, 1, 1200, 3)):
        written(n, f"r{round_}-")
    assert len(outbox.pending(engine)) == 5 + 0 + 600 + 1
