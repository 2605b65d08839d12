"""One participant's side of its service's rebuild, as its loop runs it: a compensator waits for
its step; the loop asks, between batches, whether the rebuild is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from engine.participant import Participant
from engine.worker.rebuild.positioning import caught_up
from engine.worker.rebuild.state import CREATED, RebuildRequired, RebuildState

log = logging.getLogger("engine.worker.rebuild")


class Rebuild:
    """One participant's side of its service's rebuild, as its loop runs it."""

    CHECK_EVERY = 1.0  # seconds between two looks at the rows and the group's offsets

    def __init__(self, bootstrap: str, state: RebuildState, participant: Participant, step: str | None) -> None:
        self.bootstrap = bootstrap
        self.state = state
        self.name = participant.name
        self.step = step if participant.compensator else None  # what a compensator waits for
        self._checked = 0.0
        self._said = False

    async def wait_for_step(self, stop: asyncio.Event) -> bool:
        """A compensator: wait until its step has re-applied its history; False if stopped first."""
        said = False
        while self.step is not None and not stop.is_set():
            step = (await asyncio.to_thread(self.state.rows)).get(self.step)
            if step is None or step.rebuilt:
                return True
            if not said:
                log.info("%s: rebuilding: waiting for %s to replay its history first", self.name, self.step)
                said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.CHECK_EVERY)
        return not stop.is_set()

    async def over(self, consumer: AIOKafkaConsumer) -> bool:
        """True once the service's rebuild is over (looked at every CHECK_EVERY seconds at most);
        ``RebuildRequired`` if a new one began meanwhile (the database lost again)."""
        if time.monotonic() - self._checked < self.CHECK_EVERY:
            return False
        self._checked = time.monotonic()
        rows = await asyncio.to_thread(self.state.rows)
        mine = rows.get(self.name)
        if CREATED in rows or (mine is not None and mine.targets is None):
            raise RebuildRequired(f"{self.name}: its database was lost again during its rebuild")
        if mine is None:
            return True
        if not mine.rebuilt and mine.targets is not None:
            try:
                if not await caught_up(consumer, mine.targets):
                    return False
            except KafkaError as exc:  # the broker or the group's coordinator: ask again later
                log.info("%s: rebuilding: %s; asking again", self.name, exc)
                return False
            await asyncio.to_thread(self.state.mark_rebuilt, self.name)
            log.info("%s: rebuilding: recorded history re-applied", self.name)
        if await asyncio.to_thread(self.state.finish):
            return True
        if not self._said:
            waiting = [r.consumer for r in (await asyncio.to_thread(self.state.rows)).values() if not r.rebuilt]
            log.info("%s: rebuilding: waiting for %s before applying what queued", self.name, ", ".join(waiting))
            self._said = True
        return False
