"""The inbox (engine.store.inbox): its event ids kept for the retention window and pruned a chunk
at a time, one consumer's alone; its positions, one per partition, only ever moving forward and
taking their topic's id. The toy's second step applies the batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine.worker.batch.processor import BatchProcessor
from tests import databases
from tests.toy.events import SECOND
from tests.toy.kit import Rec, applied, first_done, processor_for
from tests.toy.saga import Settings


@pytest.fixture
def second(tmp_path: Path) -> BatchProcessor:
    return processor_for("second", databases.with_databases(Settings(data_dir=tmp_path), tmp_path.name))


async def test_inbox_rows_are_pruned_only_after_the_retention(second: BatchProcessor) -> None:
    await applied(second, [Rec(first_done("prune-1", name="Pru").to_json())])
    assert second.prune_inbox(older_than_hours=1) == 0  # applied just now: remembered
    assert second.prune_inbox(older_than_hours=0) == 1  # past the retention: forgotten


async def test_a_large_prune_goes_a_chunk_at_a_time_and_leaves_other_consumers_and_newer_rows(
    second: BatchProcessor,
) -> None:
    await applied(second, [Rec(first_done(f"chunk-{n}", name=f"Chu{n}").to_json()) for n in range(25)])
    table = second.inbox.table
    with second.engine.begin() as conn:
        conn.execute(table.update().values(received_at=0.0))  # applied long ago
        other = {"consumer": "someone.else", "saga_id": "x", "type": "FirstDone", "received_at": 0.0}
        conn.execute(table.insert(), [other | {"event_id": "e1"}, other | {"event_id": "e2"}])
    await applied(second, [Rec(first_done("chunk-new", name="Chunew").to_json())])
    assert second.inbox.prune(second.engine, older_than_hours=1, chunk=10) == 25
    with second.engine.connect() as conn:
        per_consumer = select(table.c.consumer, func.count()).group_by(table.c.consumer)
        left = conn.execute(per_consumer.order_by(table.c.consumer))
        assert left.all() == [("second", 1), ("someone.else", 2)]


async def test_positions_move_forward_only_and_each_partition_has_its_own(second: BatchProcessor) -> None:
    a = Rec(first_done("pos-1", name="Poa").to_json(), partition=1, offset=10, timestamp=5)
    b = Rec(first_done("pos-2", name="Pob").to_json(), partition=2, offset=3, timestamp=7)
    await applied(second, [a, b])
    late = Rec(first_done("pos-3", name="Poc").to_json(), partition=1, offset=4, timestamp=9)  # as a zombie might
    await applied(second, [late])
    with second.engine.connect() as conn:
        assert second.inbox.positions(conn) == {(SECOND, 1): (11, 9, None), (SECOND, 2): (4, 7, None)}


async def test_a_position_recorded_before_topic_ids_were_kept_adopts_the_topics_id(second: BatchProcessor) -> None:
    """Positions from revision 0003 have no topic id: the topic as it is now is the one they were on."""
    assert (await applied(second, [Rec(first_done("adopt-1", name="Ada").to_json(), offset=10)])).applied
    second.topics.ids = {SECOND: "the-id"}
    assert (await applied(second, [Rec(first_done("adopt-1", name="Ada").to_json(), offset=10)])).duplicates == 1
    assert (await applied(second, [Rec(first_done("adopt-2", name="Adb").to_json(), offset=11)])).applied
    with second.engine.connect() as conn:
        assert second.inbox.positions(conn)[(SECOND, 0)][::2] == (12, "the-id")
