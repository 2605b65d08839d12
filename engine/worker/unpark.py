"""Between batches: the end of a rebuild, and the parked records that fall due.

While its database is rebuilt, a participant parks what has no recorded decision; once the
rebuild is over (engine.worker.rebuild) it decides anew, applying what was parked first. A record
parked to be retried is applied again when it is due; the records of its saga behind it follow.
Each saga's records are applied in the order they arrived (engine.store.parked).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer
from sqlalchemy.exc import DBAPIError

from engine.observe.sensor import LoopSensor
from engine.wire.text import printable
from engine.worker.batch.processor import BatchProcessor
from engine.worker.publish import Publisher
from engine.worker.rebuild import Rebuild

log = logging.getLogger(__name__)

UNPARK_EVERY_SECONDS = 1.0  # how often a participant with nothing parked looks again


class Unparker:
    """Applies one participant's parked records as they fall due, and ends its rebuild."""

    def __init__(
        self,
        processor: BatchProcessor,
        publisher: Publisher,
        sensor: LoopSensor,
        batch_size: int,
        rebuild: Rebuild | None,
    ) -> None:
        self.processor = processor
        self.publisher = publisher
        self.sensor = sensor
        self.batch_size = batch_size
        self.rebuild = rebuild  # while its database is being rebuilt (engine.worker.rebuild)
        self.name = processor.participant.name
        self.next_look = 0.0  # monotonic

    def due(self, due_at: float | None) -> None:
        """A record was parked to be retried at ``due_at`` (epoch seconds): look then at the latest."""
        if due_at is not None:
            self.next_look = min(self.next_look, self._monotonic(due_at))

    async def between_batches(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """While rebuilding, see whether the rebuild is over; after it, apply what was parked."""
        try:
            if self.processor.rebuilding:
                self.sensor.on_rebuilding(True)
                if self.rebuild is None or await self.rebuild.over(consumer):
                    self.processor.rebuilt()
                    self.sensor.on_rebuilding(False)
                    log.info("%s: rebuilt; now applying what was parked, then deciding anew", self.name)
                    self.next_look = 0.0
            elif time.monotonic() >= self.next_look:
                self.next_look = await self._unpark(stop)
        except DBAPIError as exc:  # unavailable, or its tables gone: the next batch checks which
            self.processor.guard.doubt()
            log.warning("%s: database error between batches, trying again: %s", self.name, printable(str(exc), 300))
            self.next_look = time.monotonic() + UNPARK_EVERY_SECONDS

    async def _unpark(self, stop: asyncio.Event) -> float:
        """Apply the parked records that are due, each saga's in order; when to look again (monotonic)."""
        records, next_due = await asyncio.to_thread(self.processor.parked_records, self.batch_size)
        if records:
            result = await self.processor.apply(records, stop)
            self.sensor.on_applied(result)
            await self.publisher.publish(result.outbox)
        count = 0  # none due and none to retry later: none parked
        if records or next_due is not None:
            count = await asyncio.to_thread(self.processor.parked.count, self.processor.engine)
        self.sensor.on_parked(count)
        if not count:
            self.processor.drained()
        if records:
            return 0.0  # what queued behind them follows at once
        return self._monotonic(next_due)

    @staticmethod
    def _monotonic(due_at: float | None) -> float:
        """When to look at the parked records again for one due at ``due_at`` (epoch seconds):
        then, or within a second (another instance may have parked some)."""
        wait = UNPARK_EVERY_SECONDS if due_at is None else max(0.0, due_at - time.time())
        return time.monotonic() + min(wait, UNPARK_EVERY_SECONDS)
