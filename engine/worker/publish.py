"""Step 3 of the participant loop: publish what a committed batch put in the outbox.

In order, with acks=all, as long as it takes (a record not acknowledged is sent again; consumers
know a copy by its event id; a batch the broker refused for good gets a new producer first, see
engine.broker.producing); then the rows are handed back as sent, for the next transaction to
delete (engine.worker.batch.transaction). A crash point sits after the publish (engine.faults).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from engine import faults
from engine.broker.producing import RenewingProducer
from engine.observe.sensor import LoopSensor
from engine.store.outbox import OutboxRow

log = logging.getLogger(__name__)

SEND_RETRY_SECONDS = 0.5


class Publisher:
    """Publishes one participant's outbox rows through its producer."""

    def __init__(
        self,
        name: str,
        producer: RenewingProducer,
        sent: Callable[[Sequence[OutboxRow]], None],
        sensor: LoopSensor,
        crash_at: str | None,
    ) -> None:
        self.name = name
        self.producer = producer
        self.sent = sent
        self.sensor = sensor
        self.crash_at = crash_at

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Publish ``rows`` in order, wait for every acknowledgement, then hand them back as sent."""
        if not rows:
            return
        await self.send(rows)
        self.sensor.on_published(rows)
        faults.check(self.crash_at, faults.AFTER_PUBLISH)
        self.sent(rows)

    async def send(self, rows: Sequence[OutboxRow]) -> None:
        """Send ``rows`` in order and wait for every acknowledgement (acks=all), as long as it takes."""
        while True:
            try:
                await self.send_once(rows)
                return
            except KafkaError as exc:
                # Not acknowledged: send again (consumers dedupe by event id).
                log.warning("%s: publish failed, retrying: %s", self.name, exc)
                await asyncio.sleep(SEND_RETRY_SECONDS)

    async def send_once(self, rows: Sequence[OutboxRow]) -> None:
        """Send ``rows`` in order and wait for every acknowledgement; KafkaError when one is refused."""

        async def send(producer: AIOKafkaProducer) -> None:
            futures = [
                await producer.send(
                    row.topic, row.value, key=row.key, headers=[(k, v.encode()) for k, v in row.headers]
                )
                for row in rows
            ]
            await asyncio.gather(*futures)

        await self.producer.attempt(send)
