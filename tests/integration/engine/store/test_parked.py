"""Parked records (engine.store.parked): a saga's later records wait behind its head, in order,
while other sagas pass; what is due is read by the wall clock as it is now; two instances that
read the same records as due apply each once, and never move a record behind a head the other
put off; the ids the engine deletes and updates them by are never handed out again, even when the
table empties."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.events import Event
from engine.participant import UnitOfWork
from engine.retry import RetryPolicy
from engine.store.parked import ParkedRecord
from engine.wire.envelope import wrap
from engine.worker.batch.processor import BatchProcessor
from engine.worker.batch.result import BatchResult
from tests import databases
from tests.toy.events import Asked, SecondDone
from tests.toy.handlers import do_second
from tests.toy.kit import (
    UNLIMITED,
    Rec,
    applied,
    engine_for,
    first_done,
    flaky,
    ordered,
    outcomes,
    processor_for,
    retried,
    tally,
)
from tests.toy.saga import TOY, Settings

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


async def test_later_records_of_a_parked_saga_wait_behind_it_in_order_and_other_sagas_pass(settings: Settings) -> None:
    """The head fails: the saga's later records (same batch and later batches) are parked behind it,
    other sagas are applied at once; when the head succeeds, the saga's records follow in order."""
    settings = settings.model_copy(update={"retry": UNLIMITED})
    log: list[str] = []
    failing = {"ord-s"}
    handle = ordered(log, failing)
    # This participant takes three event types of a saga, so three records of one saga can queue.
    processor = processor_for("second", settings, FirstDone=handle, Asked=handle, SecondDone=handle)
    head = first_done("ord-s", name="Ola")
    asked = wrap(Asked(name="Ola"), saga_id="ord-s", source="test", causation_id="e")
    done = wrap(SecondDone(name="Ola"), saga_id="ord-s", source="test", causation_id="c")
    batch = [Rec(head.to_json(), offset=0), Rec(first_done("ord-a", name="Abe").to_json(), offset=1),
             Rec(asked.to_json(), offset=2)]  # fmt: skip
    first = await applied(processor, batch)
    second = await applied(processor, [Rec(done.to_json(), offset=3), Rec(first_done("ord-b", name="Bob").to_json())])
    assert log == ["ord-a:FirstDone", "ord-b:FirstDone"]  # they passed it
    assert (first.parked, second.parked) == (2, 1)
    with processor.engine.connect() as conn:
        table = processor.parked.table
        parked = conn.execute(select(table.c.event_id, table.c.reason).order_by(table.c.id)).all()
    assert parked == [(head.id, "retrying"), (asked.id, "waiting"), (done.id, "waiting")]
    # While it fails, nothing of its saga moves, however often it is tried.
    tries = 0
    deadline = time.monotonic() + 10
    while tries < 3:
        assert time.monotonic() < deadline
        records, _ = processor.parked_records(100)
        if records:
            assert records[0].id == min(r.id for r in records)
            await applied(processor, records)
            tries += 1
    assert processor.parked.count(processor.engine) == 3 and len(log) == 2
    failing.clear()
    result = await retried(processor, BatchResult())
    assert log[2:] == ["ord-s:FirstDone", "ord-s:Asked", "ord-s:SecondDone"]
    assert not [row for row in result.outbox if row.topic.endswith(".dlq")]
    assert tally(processor, "Ola") == 1


async def test_two_instances_that_took_the_same_parked_record_apply_it_once(settings: Settings) -> None:
    """Both instances read the parked record as due; the one that comes second finds it gone (or
    put off), under the lock, and does nothing with it."""
    settings = settings.model_copy(update={"retry": UNLIMITED})
    calls: list[str] = []

    def counted(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        calls.append(uow.saga_id)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return do_second(event, uow)

    one = processor_for("second", settings, FirstDone=counted)
    two = BatchProcessor(one.participant, TOY.types, engine_for("second", settings), settings)
    assert (await applied(one, [Rec(first_done("twice-1", name="Tia").to_json())])).parked == 1
    first_seen = due(one)
    seen_by_two, _ = two.parked_records(10)
    assert [r.id for r in first_seen] == [r.id for r in seen_by_two]
    result = await applied(one, first_seen)
    again = await applied(two, seen_by_two)
    assert calls == ["twice-1", "twice-1"]  # one failed try, one that succeeded: never a third
    assert len(outcomes(result)) == 1 and again.outbox == [] and again.applied == {}
    assert one.parked.count(one.engine) == 0 and tally(one, "Tia") == 1


async def test_a_record_waiting_behind_a_head_put_off_by_another_instance_stays_behind_it(settings: Settings) -> None:
    """Two instances read [head, waiting] as due; the first tries the head, which fails again and is
    put off; the second, with its stale list, must apply neither."""
    policy = RetryPolicy(initial_interval=0.001, backoff_coefficient=1000, maximum_interval=60, maximum_attempts=0)
    settings = settings.model_copy(update={"retry": policy})
    log: list[str] = []
    failing = {"race-s"}
    handle = ordered(log, failing)
    one = processor_for("second", settings, FirstDone=handle, Asked=handle)
    two = BatchProcessor(one.participant, TOY.types, engine_for("second", settings), settings)
    head = first_done("race-s", name="Ola")
    asked = wrap(Asked(name="Ola"), saga_id="race-s", source="test", causation_id="e")
    assert (await applied(one, [Rec(head.to_json(), offset=0), Rec(asked.to_json(), offset=1)])).parked == 2
    first_seen = due(one)
    stale, _ = two.parked_records(10)
    assert [r.id for r in first_seen] == [r.id for r in stale] and len(first_seen) == 2
    await applied(one, first_seen)  # the head fails again: put off a second; the waiting record kept behind it
    await applied(two, stale)
    assert log == [] and one.parked.count(one.engine) == 2
    # And alone, as the loop's last resort applies records: the waiting record does not move either.
    await applied(two, stale[1:])
    assert log == []
    failing.clear()
    await retried(one, BatchResult(), timeout=90)
    assert log == ["race-s:FirstDone", "race-s:Asked"]


async def test_a_retry_put_off_before_the_clock_stepped_back_is_not_held_up_by_the_step(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(
        update={"retry": RetryPolicy(initial_interval=0.01, maximum_interval=0.01, maximum_attempts=0)}
    )
    processor = processor_for("second", settings, FirstDone=flaky(1, then=do_second))
    assert (await applied(processor, [Rec(first_done("clk-1", name="Cal").to_json())])).parked == 1
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # the wall clock steps back an hour
    records, _ = processor.parked_records(10)
    assert len(records) == 1  # due now, not in an hour
    assert outcomes(await applied(processor, records)) == ["SecondDone"]
