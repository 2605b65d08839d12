"""The participant loop's housekeeping, against a real broker and a real database: the outbox
flusher publishes what another instance left behind, the inbox pruner keeps the inbox bounded,
and neither stops working (nor stops the loop) when the database fails under it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, select, text

from capture.bootstrap import engine_for
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import TopicWatcher, start_event
from contracts import topics
from engine.participant import Participant
from engine.worker import run
from engine.worker.loop import ParticipantLoop
from tests.integration.test_loop import for_saga, participant, produce, topic  # noqa: F401  (fixtures)
from tests.integration.test_processing import Rec
from tests.support import caught_up, eventually


@asynccontextmanager
async def running(loop: ParticipantLoop) -> AsyncIterator[ParticipantLoop]:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.ready.wait(), 30)  # started: its start-up flush is behind it
        yield loop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # stops promptly, flusher and pruner included


def renamed(engine: Engine, table: str, to: str) -> None:
    """A table the loop uses is gone (renamed): every statement on it fails in the database."""
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} RENAME TO {to}"))


def backlog(name: str) -> float | None:
    return REGISTRY.get_sample_value("pokesaga_outbox_backlog", {"participant": name})


async def test_outbox_rows_a_dead_instance_left_are_published_by_a_running_one_even_after_database_errors(
    participant: Participant,  # noqa: F811
    topic: str,  # noqa: F811
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings.model_copy(update={"outbox_grace_seconds": 1.0})
    engine = engine_for("status", settings)
    survivor = run.build_loop(CAPTURE, participant, settings, engine)
    dead = run.build_loop(CAPTURE, participant, settings, engine)  # shares the database, never runs
    saga = f"stranded-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.WARNING, logger="engine.worker.flusher")
    async with TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream, running(survivor):
        # The database fails under the flusher: its rounds fail, and the loop goes on.
        await asyncio.to_thread(renamed, engine, "outbox", "outbox_away")
        await eventually(lambda: _async("outbox flush failed" in caplog.text), timeout=30, what="a failed flush round")
        await asyncio.to_thread(renamed, engine, "outbox_away", "outbox")

        # The other instance committed its transaction and died before publishing.
        left = await dead.processor.apply(
            [Rec(start_event(saga, {"name": "Ola"}, {"name": "Mew"}).to_json(), topic=topic)]
        )
        assert len(left.outbox) == 1
        seen: list[float | None] = []

        async def published() -> bool:
            seen.append(backlog(participant.name))
            return bool(for_saga(await downstream.drain(), saga))

        await eventually(published, timeout=30, what="the stranded row published")
        assert max(s or 0 for s in seen) == 1  # the row that exists was counted, though no instance held it
        await eventually(lambda: _async(backlog(participant.name) == 0), timeout=10, what="the backlog back at 0")
        copies = for_saga(await downstream.drain(), saga)
    assert [c["type"] for c in copies] == ["PokemonParalyzed"]
    assert survivor.processor.pending() == []


async def test_the_inbox_pruner_survives_database_errors_and_the_loop_goes_on(
    participant: Participant,  # noqa: F811
    topic: str,  # noqa: F811
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = engine_for("status", settings)
    loop = run.build_loop(CAPTURE, participant, settings, engine)
    loop.prune_every = 0.2
    inbox = participant.metadata.tables["inbox"]
    old = {"consumer": participant.name, "event_id": f"old-{uuid.uuid4().hex[:8]}", "saga_id": "old", "type": "X",
           "topic": topic, "partition": 0, "offset": 0, "received_at": 0.0}  # fmt: skip
    caplog.set_level(logging.WARNING, logger="engine.worker.loop")
    renamed(engine, "inbox", "inbox_away")
    saga = f"after-{uuid.uuid4().hex[:8]}"
    async with TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream, running(loop):
        await eventually(lambda: _async("pruning the inbox failed" in caplog.text), timeout=30, what="a failed prune")
        await asyncio.to_thread(renamed, engine, "inbox_away", "inbox")
        with engine.begin() as conn:
            conn.execute(inbox.insert(), [old])

        def remembered() -> int:
            with engine.connect() as conn:
                query = select(func.count()).select_from(inbox).where(inbox.c.event_id == old["event_id"])
                return int(conn.execute(query).scalar_one())

        await eventually(lambda: _async(remembered() == 0), timeout=30, what="the old inbox row pruned")
        # The loop itself never stopped.
        await produce(settings.bootstrap, topic, start_event(saga, {"name": "Pia"}, {"name": "Mew"}).to_json())
        await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="consumed")
        assert [d["type"] for d in for_saga(await downstream.drain(), saga)] == ["PokemonParalyzed"]


async def _async(value: bool) -> bool:
    return value
