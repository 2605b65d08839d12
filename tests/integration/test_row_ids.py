"""Row ids the engine deletes and updates by are never handed out again, even when a table empties:
two instances on one database, one acting on ids it read a moment ago, reach only the rows it read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from capture.settings import Settings
from engine.retry import RetryPolicy
from engine.store.outbox import OutboxRow, event_row
from engine.store.parked import ParkedRecord
from engine.worker.batch.processor import BatchProcessor
from engine.worker.flusher import OutboxFlusher
from services.pokeball.handlers import throw_pokeball
from tests import databases
from tests.integration.test_processing import Rec, balls, flaky, processor_for, weakened

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
    a = processor_for("pokeball", settings, PokemonWeakened=flaky(1, then=throw_pokeball))
    b = processor_for("pokeball", settings, PokemonWeakened=throw_pokeball)
    c = processor_for("pokeball", settings, PokemonWeakened=flaky(1, then=throw_pokeball))
    assert (await a.apply([Rec(weakened("stale-1", trainer="Sta").to_json())])).parked == 1
    stale = due(a)  # A has read it, and is about to apply it
    assert (await b.apply(due(b))).applied == {"PokemonWeakened": 1}  # B applied it first: no record is parked now
    assert (await c.apply([Rec(weakened("fresh-1", trainer="Fre").to_json())])).parked == 1  # another saga's, parked
    (fresh,) = due(c)
    assert fresh.id not in {r.id for r in stale}  # a new id, though the table was empty
    result = await a.apply(stale)
    assert result.applied == {} and result.outbox == []  # what A read is gone: nothing to do
    assert a.parked.count(a.engine) == 1  # the other saga's record is still parked
    assert (await c.apply(due(c))).applied == {"PokemonWeakened": 1}
    assert balls(a, "Sta") == balls(a, "Fre") == settings.starter_balls - 1  # each thrown once


def test_the_flusher_never_takes_a_live_row_for_one_it_saw_before_the_outbox_emptied(settings: Settings) -> None:
    """A's flusher sees B's row; B publishes it and deletes it (the outbox empties), then writes a new
    one. Past the grace period, A must not publish B's new row as if its instance had died."""
    a = processor_for("pokeball", settings)
    b = processor_for("pokeball", settings)
    sent: list[OutboxRow] = []

    async def send(rows: Sequence[OutboxRow]) -> None:
        sent.extend(rows)

    flusher = OutboxFlusher("pokeball", a.outbox, a.engine, send, grace=5.0)

    def written(saga: str) -> OutboxRow:
        with b.engine.begin() as conn:
            (row,) = b.outbox.insert(conn, [event_row("pokeball", weakened(saga), "capture.delivery")])
        return row

    first = written("live-1")
    assert asyncio.run(flusher.flush_round()) == 0  # seen now, within the grace period
    b.mark_sent([first.id])  # published and acknowledged by B: the outbox is empty
    second = written("live-2")
    assert second.id > first.id  # an id is never handed out again
    flusher.first_seen = {i: seen - 10 for i, seen in flusher.first_seen.items()}  # the grace period passes
    assert asyncio.run(flusher.flush_round()) == 0 and sent == []  # B's new row is new to A
    assert [row.id for row in a.outbox.pending(a.engine)] == [second.id]
    a.outbox.mark_sent(a.engine, [first.id])  # a late mark of the first row deletes nothing else
    assert [row.id for row in a.outbox.pending(a.engine)] == [second.id]
