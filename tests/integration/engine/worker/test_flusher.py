"""The outbox flusher (engine.worker.flusher), against a real database and, for the first test, a
real broker: it publishes what another instance left behind, keeps working when the database fails
under it, and never takes a live row for one it saw before the outbox emptied."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from engine.participant import Participant
from engine.store.outbox import OutboxRow, event_row
from engine.worker import run
from engine.worker.flusher import OutboxFlusher
from tests import databases
from tests.support import eventually
from tests.toy.events import SECOND
from tests.toy.kit import (
    Rec,
    TopicWatcher,
    applied,
    asked,
    engine_for,
    first_done,
    for_saga,
    processor_for,
    renamed,
    running,
)
from tests.toy.saga import TOY, Settings


def backlog(name: str) -> float | None:
    return REGISTRY.get_sample_value("pokesaga_outbox_backlog", {"participant": name})


async def test_outbox_rows_a_dead_instance_left_are_published_by_a_running_one_even_after_database_errors(
    participant: Participant, topic: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"outbox_grace_seconds": 1.0})
    engine = engine_for("first", settings)
    survivor = run.build_loop(TOY, participant, settings, engine)
    dead = run.build_loop(TOY, participant, settings, engine)  # shares the database, never runs
    saga = f"stranded-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.WARNING, logger="engine.worker.flusher")
    async with TopicWatcher(settings.bootstrap, SECOND) as downstream, running(survivor):
        # The database fails under the flusher: its rounds fail, and the loop goes on.
        await asyncio.to_thread(renamed, engine, "outbox", "outbox_away")
        await eventually(lambda: _async("outbox flush failed" in caplog.text), timeout=30, what="a failed flush round")
        await asyncio.to_thread(renamed, engine, "outbox_away", "outbox")

        # The other instance committed its transaction and died before publishing.
        left = await applied(dead.processor, [Rec(asked(saga, "Ola").to_json(), topic=topic)])
        assert len(left.outbox) == 1
        seen: list[float | None] = []

        async def published() -> bool:
            seen.append(backlog(participant.name))
            return bool(for_saga(await downstream.drain(), saga))

        await eventually(published, timeout=30, what="the stranded row published")
        assert max(s or 0 for s in seen) == 1  # the row that exists was counted, though no instance held it
        await eventually(lambda: _async(backlog(participant.name) == 0), timeout=10, what="the backlog back at 0")
        copies = for_saga(await downstream.drain(), saga)
    assert [c["type"] for c in copies] == ["FirstDone"]
    assert survivor.processor.pending() == []


def test_the_flusher_never_takes_a_live_row_for_one_it_saw_before_the_outbox_emptied(tmp_path: Path) -> None:
    """A's flusher sees B's row; B publishes it and deletes it (the outbox empties), then writes a new
    one. Past the grace period, A must not publish B's new row as if its instance had died."""
    settings = databases.with_databases(Settings(data_dir=tmp_path), tmp_path.name)
    a = processor_for("second", settings)
    b = processor_for("second", settings)
    sent: list[OutboxRow] = []

    async def send(rows: Sequence[OutboxRow]) -> None:
        sent.extend(rows)

    flusher = OutboxFlusher("second", a.outbox, a.engine, send, grace=5.0)

    def written(saga: str) -> OutboxRow:
        with b.engine.begin() as conn:
            (row,) = b.outbox.insert(conn, [event_row("second", first_done(saga), "toy.outcomes")])
        return row

    first = written("live-1")
    assert asyncio.run(flusher.flush_round()) == 0  # seen now, within the grace period
    b.sent([first])  # published and acknowledged by B,
    b.mark_sent()  # and deleted: the outbox is empty
    second = written("live-2")
    assert second.id > first.id  # an id is never handed out again
    flusher.first_seen = {i: seen - 10 for i, seen in flusher.first_seen.items()}  # the grace period passes
    assert asyncio.run(flusher.flush_round()) == 0 and sent == []  # B's new row is new to A
    assert [row.id for row in a.outbox.pending(a.engine)] == [second.id]
    a.outbox.mark_sent(a.engine, [first.id])  # a late mark of the first row deletes nothing else
    assert [row.id for row in a.outbox.pending(a.engine)] == [second.id]


async def _async(value: bool) -> bool:
    return value
