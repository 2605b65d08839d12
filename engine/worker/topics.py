"""Topics made again under a running participant: seen by their ids, read again from their start.

A topic deleted and made again under the same name starts its offsets over under a new topic id
(engine.broker.topicids). Every few seconds the loop's participant reads the ids of the topics it
consumes; a batch with a record below its partition's position waits until the ids are read
(``Unverified``); partitions whose position was recorded on another id are read again from their
beginning (``StartedOver``): the group is moved there first, then their positions start over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from engine.worker.batch.errors import Interrupted
from engine.worker.batch.processor import BatchProcessor

log = logging.getLogger(__name__)

TOPIC_IDS_EVERY_SECONDS = 2.0  # how often the ids of the topics read are read again
TOPIC_IDS_RETRY_MAX_SECONDS = 5.0


class TopicWatch:
    """The ids of one participant's topics, read through its consumer; partitions started over."""

    def __init__(self, processor: BatchProcessor, consumer: AIOKafkaConsumer) -> None:
        self.processor = processor
        self.consumer = consumer
        self.name = processor.participant.name
        self.wanted = processor.participant.topics
        self.topics = processor.topics
        self.topics.watched = True  # its records' topics are known by their ids from now on

    async def first_read(self) -> None:
        """At start: the ids now, if the broker answers (else they are read when a batch needs them)."""
        with contextlib.suppress(KafkaError):
            await self.topics.read(self.consumer, self.wanted)

    async def watch(self, stop: asyncio.Event) -> None:
        """Every few seconds, read the ids of the topics this participant consumes: a topic deleted
        and made again is seen by its new id (the next batch of it starts its partitions over)."""
        said = False
        while not stop.is_set() and self.topics.supported:
            try:
                changed = await self.topics.read(self.consumer, self.wanted)
                for topic, (before, now) in changed.items():
                    if before is not None:
                        log.warning("%s: topic %s was made again (id %s, before %s)", self.name, topic, now, before)
                if changed:  # the consumer's metadata may still say the topic is gone, for minutes: it rejoins now
                    await self.topics.refresh_metadata(self.consumer)
                said = False
            except KafkaError as exc:
                if not said:
                    log.info("%s: reading topic ids failed, trying again: %s", self.name, exc)
                said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TOPIC_IDS_EVERY_SECONDS)

    async def read_ids(self, topics: set[str], stop: asyncio.Event) -> None:
        """Read the ids of ``topics`` now, as long as it takes (the batch waits, unacknowledged)."""
        delay = 0.1
        while True:
            try:
                await self.topics.read(self.consumer, topics)
                return
            except KafkaError as exc:
                if stop.is_set():
                    raise Interrupted from None
                log.warning("%s: reading the ids of %s failed, retrying: %s", self.name, ", ".join(topics), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, TOPIC_IDS_RETRY_MAX_SECONDS)

    async def start_over(self, partitions: dict[tuple[str, int], str]) -> None:
        """Partitions of a topic deleted and made again: move the group to their first record (so a
        crash from now on resumes there), then start their positions over there. Their records in
        hand are not applied: they come again, with every record before them."""
        assigned = self.consumer.assignment()
        tps = [tp for tp in (TopicPartition(t, p) for t, p in partitions) if tp in assigned]
        if not tps:
            return  # a rebalance took them: their new owner sees the same
        await self.consumer.seek_to_beginning(*tps)
        starts = {tp: await self.consumer.position(tp) for tp in tps}
        try:
            await self.consumer.commit(starts)
        except KafkaError as exc:  # a rebalance took them meanwhile: their new owner starts them over
            log.warning("%s: could not move the group to the start of %s: %s", self.name, tps, exc)
            return
        restarts = {(tp.topic, tp.partition): (partitions[(tp.topic, tp.partition)], at) for tp, at in starts.items()}
        await asyncio.to_thread(self.processor.restart_positions, restarts)
        for tp, at in starts.items():
            log.warning(
                "%s: %s[%d] belongs to a topic made again (id %s): its records are read again from offset %d, "
                "each decided by its event id",
                self.name, tp.topic, tp.partition, partitions[(tp.topic, tp.partition)], at,
            )  # fmt: skip
