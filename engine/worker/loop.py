"""The participant loop, the same for every service and compensator.

1. Poll a batch.  2. Apply it in one local transaction (inbox + state + outbox); a small
batch on the event loop, a large one or one that must wait to retry in a worker thread, so
the event loop stays free for heartbeats and a stop.  3. Publish the outbox rows
(acks=all) and mark them sent.  4. Commit the offsets: only now is a record acknowledged.
A crash anywhere in between loses nothing (the offset is not committed, so the record is
redelivered, and unsent outbox rows are flushed at start-up, or by a running instance's
flusher, see engine.worker.flusher) and duplicates nothing (the redelivered record hits the inbox;
re-published events carry the same ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from sqlalchemy.exc import DBAPIError

from engine.observe.sensor import LoopSensor
from engine.settings import Settings
from engine.wire.text import printable
from engine.worker import crash
from engine.worker.batch.errors import Interrupted, StartedOver, Unverified
from engine.worker.batch.processor import BatchProcessor
from engine.worker.batch.result import BatchResult
from engine.worker.flusher import OutboxFlusher
from engine.worker.publish import Publisher
from engine.worker.rebuild import Rebuild

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]

TOPIC_IDS_RETRY_MAX_SECONDS = 5.0
PRUNE_EVERY_SECONDS = 300  # a short window's worth of rows is pruned a little at a time
UNPARK_EVERY_SECONDS = 1.0  # how often a participant with nothing parked looks again
PRUNE_RETRY_SECONDS = 60  # after a failed prune
TOPIC_IDS_EVERY_SECONDS = 2.0  # how often the ids of the topics read are read again


class ParticipantLoop:
    """Runs one participant until ``stop`` is set; then finishes the batch in hand and leaves."""

    def __init__(
        self,
        processor: BatchProcessor,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        settings: Settings,
        rebuild: Rebuild | None = None,
    ) -> None:
        self.processor = processor
        self.consumer = consumer
        self.producer = producer
        self.settings = settings
        self.rebuild = rebuild  # while its database is being rebuilt (engine.worker.rebuild)
        self.name = processor.participant.name
        self.sensor = LoopSensor(self.name, processor.participant.compensator)
        self.publisher = Publisher(self.name, producer, processor.sent, self.sensor, settings.crash_at)
        self.stop = asyncio.Event()  # run's: a batch waiting for its database gives up when it is set
        self.ready = asyncio.Event()
        self._next_unpark = 0.0
        self.prune_every = PRUNE_EVERY_SECONDS
        self.topics = processor.topics
        self.topics.watched = True  # its records' topics are known by their ids from now on
        self.flusher = OutboxFlusher(
            self.name, processor.outbox, processor.engine, self.publisher.send_once, settings.outbox_grace_seconds,
            self.sensor,
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        self.stop = stop
        await self.producer.start()
        try:
            await self.flush_outbox()
            await self.consumer.start()
            with contextlib.suppress(KafkaError):  # else read when a batch needs them
                await self.topics.read(self.consumer, self.processor.participant.topics)
            pruner = asyncio.create_task(self._prune_inbox(stop))
            flusher = asyncio.create_task(self.flusher.run(stop))
            topic_watch = asyncio.create_task(self._watch_topics(stop))
            self.sensor.on_rebuilding(self.processor.rebuilding)
            try:
                self.ready.set()
                log.info("%s: consuming %s", self.name, ", ".join(self.processor.participant.topics))
                while not stop.is_set():
                    batch = await self.consumer.getmany(
                        timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.batch_size
                    )
                    if batch:
                        self.topics.fetching()
                        await self.handle(batch)
                    await self._between_batches()
            except Interrupted:
                log.info("%s: stopped while waiting for its database; the batch will be redelivered", self.name)
            finally:
                for task in (pruner, flusher, topic_watch):
                    task.cancel()
                await asyncio.gather(pruner, flusher, topic_watch, return_exceptions=True)
                await self.consumer.stop()  # leaves the group: partitions move at once
        finally:
            await self.producer.stop()
            log.info("%s: stopped", self.name)

    async def _prune_inbox(self, stop: asyncio.Event) -> None:
        """Every five minutes, forget inbox rows older than the retention: the inbox stays bounded.
        A prune that fails (the database unavailable) is logged and tried again sooner."""
        while not stop.is_set():
            wait = self.prune_every
            try:
                pruned = await asyncio.to_thread(self.processor.prune_inbox, self.settings.inbox_retention_hours)
            except Exception as exc:
                wait = min(wait, PRUNE_RETRY_SECONDS)
                log.warning("%s: pruning the inbox failed, trying again in %.0fs: %s", self.name, wait, exc)
            else:
                if pruned:
                    hours = self.settings.inbox_retention_hours
                    log.info("%s: pruned %d inbox rows older than %.0fh", self.name, pruned, hours)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _watch_topics(self, stop: asyncio.Event) -> None:
        """Every few seconds, read the ids of the topics this participant consumes: a topic deleted
        and made again is seen by its new id (the next batch of it starts its partitions over)."""
        said = False
        while not stop.is_set() and self.topics.supported:
            try:
                changed = await self.topics.read(self.consumer, self.processor.participant.topics)
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

    async def _between_batches(self) -> None:
        """While rebuilding, see whether the rebuild is over; after it, apply what was parked."""
        try:
            if self.processor.rebuilding:
                self.sensor.on_rebuilding(True)
                if self.rebuild is None or await self.rebuild.over(self.consumer):
                    self.processor.rebuilt()
                    self.sensor.on_rebuilding(False)
                    log.info("%s: rebuilt; now applying what was parked, then deciding anew", self.name)
                    self._next_unpark = 0.0
            elif time.monotonic() >= self._next_unpark:
                self._next_unpark = await self._unpark()
        except DBAPIError as exc:  # unavailable, or its tables gone: the next batch checks which
            self.processor.guard.doubt()
            log.warning("%s: database error between batches, trying again: %s", self.name, printable(str(exc), 300))
            self._next_unpark = time.monotonic() + UNPARK_EVERY_SECONDS

    async def _unpark(self) -> float:
        """Apply the parked records that are due, each saga's in order; when to look again (monotonic)."""
        records, next_due = await asyncio.to_thread(self.processor.parked_records, self.settings.batch_size)
        if records:
            result = await self.processor.apply(records, self.stop)
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

    def _monotonic(self, due_at: float | None) -> float:
        """When to look at the parked records again for one due at ``due_at`` (epoch seconds):
        then, or within a second (another instance may have parked some)."""
        wait = UNPARK_EVERY_SECONDS if due_at is None else max(0.0, due_at - time.time())
        return time.monotonic() + min(wait, UNPARK_EVERY_SECONDS)

    async def handle(self, batch: Batch) -> None:
        """One batch: apply it (committed locally), publish what it produced, commit its offsets."""
        self.sensor.on_fetched(record.timestamp for records in batch.values() for record in records)
        started = time.perf_counter()
        batch, result = await self._apply(batch)
        if not batch:
            return
        self.sensor.on_applied(result, time.perf_counter() - started)
        if result.next_due is not None:  # a record was parked to be retried
            self._next_unpark = min(self._next_unpark, self._monotonic(result.next_due))
        crash.check(self.settings.crash_at, crash.AFTER_LOCAL_COMMIT)
        await self.publisher.publish(result.outbox)
        await self._commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

    async def _apply(self, batch: Batch) -> tuple[Batch, BatchResult]:
        """Apply ``batch``; first, read again the ids of topics it may have outlived, and leave out
        (to read them again from their beginning) partitions of topics made again."""
        while True:
            try:
                return batch, await self.processor.apply([r for rs in batch.values() for r in rs], self.stop)
            except Unverified as unverified:  # below a position: is the topic still the one it was?
                await self._read_topic_ids(unverified.topics)
            except StartedOver as over:  # read those partitions again from their beginning
                await self._start_over(over.partitions)
                batch = {tp: rs for tp, rs in batch.items() if (tp.topic, tp.partition) not in over.partitions}
                if not batch:
                    return batch, BatchResult()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Step 4: acknowledge the batch. A refusal is safe: the records come again, the inbox absorbs them."""
        assigned = self.consumer.assignment()
        for tp, position in offsets.items():
            # A rebalance may have taken the partition while the batch was applied.
            highwater = self.consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                self.sensor.on_lag(tp.topic, tp.partition, highwater - position)
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions: their new owner gets these records again,
            # and the inbox absorbs them.
            log.warning("%s: offset commit refused (%s); records will be redelivered", self.name, exc)
        except KafkaError as exc:  # any other refusal: the same, an offset not committed is always safe
            log.warning("%s: offset commit failed (%r); records will be redelivered", self.name, exc)

    async def _read_topic_ids(self, topics: set[str]) -> None:
        """Read the ids of ``topics`` now, as long as it takes (the batch waits, unacknowledged)."""
        delay = 0.1
        while True:
            try:
                await self.topics.read(self.consumer, topics)
                return
            except KafkaError as exc:
                if self.stop.is_set():
                    raise Interrupted from None
                log.warning("%s: reading the ids of %s failed, retrying: %s", self.name, ", ".join(topics), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, TOPIC_IDS_RETRY_MAX_SECONDS)

    async def _start_over(self, partitions: dict[tuple[str, int], str]) -> None:
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

    async def flush_outbox(self) -> None:
        """Publish what a previous run committed but did not get to publish."""
        pending = await asyncio.to_thread(self.processor.pending)
        if pending:
            log.info("%s: flushing %d unsent outbox rows", self.name, len(pending))
            await self.publisher.publish(pending)
