"""The participant loop's housekeeping, against a real broker and a real database: the inbox
pruner keeps the inbox bounded, and does not stop working (nor stop the loop) when the database
fails under it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import Engine, func, select, text

from capture.bootstrap import engine_for
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import TopicWatcher, start_event
from contracts import topics
from engine import run
from engine.loop import ParticipantLoop
from engine.participant import Participant
from tests.integration.test_loop import for_saga, participant, produce, topic  # noqa: F401  (fixtures)
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
    caplog.set_level(logging.WARNING, logger="engine.loop")
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
