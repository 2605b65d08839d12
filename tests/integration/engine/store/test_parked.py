"""Parked records (engine.store.parked): the ids the engine deletes and updates them by are never
handed out again, even when the table empties: two instances on one database, one acting on ids it
read a moment ago, reach only the rows it read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.retry import RetryPolicy
from engine.store.parked import ParkedRecord
from engine.worker.batch.processor import BatchProcessor
from tests import databases
from tests.toy.handlers import do_second
from tests.toy.kit import Rec, applied, first_done, flaky, processor_for, tally
from tests.toy.saga import Settings

QUICK = RetryPolicy(initial_interval=0.01, maximum_interval=0.01, maximum_attempts=5)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One database per service, shared by every instance the test makes (SQLite file or PostgreSQL)."""
    plain = Settings(data_dir=tmp_path, retry=QUICK)
    return databases.with_databases(plain, tmp_path.name)


def due(processor: BatchProcessor, timeout: float = 10) -> list[ParkedRecord]:
    """The parked records ``processor`` reads as due, once there are some."""
    deadline = time.monotonic() + timeout
    while not (records := processor.parked_records(10)[0]):
        assert time.monotonic() < deadline, "nothing came due"
    return records


async def test_a_stale_unpark_never_reaches_a_record_parked_since_under_an_id_handed_out_again(
    settings: Settings,
) -> None:
    """Instance A reads a parked record as due; instance B applies it (the table empties) and parks
    another saga's record; A then applies what it read. A must touch nothing of B's record."""
    a = processor_for("second", settings, FirstDone=flaky(1, then=do_second))
    b = processor_for("second", settings, FirstDone=do_second)
    c = processor_for("second", settings, FirstDone=flaky(1, then=do_second))
    assert (await applied(a, [Rec(first_done("stale-1", name="Sta").to_json())])).parked == 1
    stale = due(a)  # A has read it, and is about to apply it
    assert (await applied(b, due(b))).applied == {"FirstDone": 1}  # B applied it first: no record is parked now
    assert (await applied(c, [Rec(first_done("fresh-1", name="Fre").to_json())])).parked == 1  # another saga's, parked
    (fresh,) = due(c)
    assert fresh.id not in {r.id for r in stale}  # a new id, though the table was empty
    result = await applied(a, stale)
    assert result.applied == {} and result.outbox == []  # what A read is gone: nothing to do
    assert a.parked.count(a.engine) == 1  # the other saga's record is still parked
    assert (await applied(c, due(c))).applied == {"FirstDone": 1}
    assert tally(a, "Sta") == tally(a, "Fre") == 1  # each applied once
