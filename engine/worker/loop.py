"""The participant loop, the same for every service and compensator.

1. Poll a batch.  2. Apply it in one local transaction (inbox + state + outbox, and the
deletion of the rows the batches before published); a small batch on the event loop, a large
one or one that must wait to retry in a worker thread, so the event loop stays free for
heartbeats and a stop.  3. Publish the outbox rows (acks=all).  4. Commit the offsets: only
now is a record acknowledged. The commit's answer is awaited when the next batch arrives (or
the loop is idle, or stops), not before the next poll; a commit is only ever sent for records
whose output is published. When nothing comes, the rows published are deleted on their own.
A crash anywhere in between loses nothing (the offset is not committed, so the record is
redelivered, and outbox rows not deleted are published again at start-up, or by a running
instance's flusher, see engine.worker.flusher) and duplicates nothing (the redelivered record
hits the inbox; re-published events carry the same ids, and their consumers drop the copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from engine import faults
from engine.broker import kafka
from engine.broker.producing import RenewingProducer
from engine.observe.sensor import LoopSensor
from engine.settings import Settings
from engine.worker.batch.errors import Interrupted, StartedOver, Unverified
from engine.worker.batch.processor import BatchProcessor
from engine.worker.batch.result import BatchResult
from engine.worker.flusher import OutboxFlusher
from engine.worker.publish import Publisher
from engine.worker.rebuild import Rebuild
from engine.worker.topics import TopicWatch
from engine.worker.unpark import Unparker

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]

PRUNE_EVERY_SECONDS = 300  # a short window's worth of rows is pruned a little at a time
PRUNE_RETRY_SECONDS = 60  # after a failed prune


class ParticipantLoop:
    """Runs one participant until ``stop`` is set; then finishes the batch in hand and leaves."""

    def __init__(
        self,
        processor: BatchProcessor,
        consumer: AIOKafkaConsumer,
        producer: RenewingProducer,
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
        self.prune_every = PRUNE_EVERY_SECONDS
        self.topics = TopicWatch(processor, consumer)
        self.unparker = Unparker(processor, self.publisher, self.sensor, settings.batch_size, rebuild)
        self.flusher = OutboxFlusher(
            self.name, processor.outbox, processor.engine, self.publisher.send_once, settings.outbox_grace_seconds,
            self.sensor, processor.in_hand,
        )  # fmt: skip
        self.committing: asyncio.Task[None] | None = None  # the last offset commit, its answer not awaited

    async def run(self, stop: asyncio.Event) -> None:
        self.stop = stop
        await self.producer.start()
        try:
            await self.flush_outbox()
            woken = await asyncio.to_thread(self.processor.wake_held)
            if woken:
                log.info("%s: %d records held for a newer version: looking at them now", self.name, woken)
            await self.consumer.start()
            await self.topics.first_read()
            pruner = asyncio.create_task(self._prune_inbox(stop))
            flusher = asyncio.create_task(self.flusher.run(stop))
            topic_watch = asyncio.create_task(self.topics.watch(stop))
            self.sensor.on_rebuilding(self.processor.rebuilding)
            try:
                self.ready.set()
                log.info("%s: consuming %s", self.name, ", ".join(self.processor.participant.topics))
                while not stop.is_set():
                    batch = await self.consumer.getmany(
                        timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.batch_size
                    )
                    if batch:
                        self.topics.topics.fetching()
                        await self.handle(batch)
                    else:
                        await self.idle()
                    await self.unparker.between_batches(self.consumer, stop)
                await self.idle(stopping=True)
            except Interrupted:
                log.info("%s: stopped while waiting for its database; the batch will be redelivered", self.name)
            finally:
                tasks = [t for t in (pruner, flusher, topic_watch, self.committing) if t is not None]
                for task in tasks:
                    task.cancel()  # a commit cut short is safe: its records come again
                await asyncio.gather(*tasks, return_exceptions=True)
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

    async def handle(self, batch: Batch) -> None:
        """One batch: apply it (committed locally), publish what it produced, commit its offsets."""
        self.sensor.on_fetched(record.timestamp for records in batch.values() for record in records)
        await self.committed()  # before anything may move a position (a topic made again)
        started = time.perf_counter()
        batch, result = await self._apply(batch)
        if not batch:
            return
        self.sensor.on_applied(result, time.perf_counter() - started)
        self.unparker.due(result.next_due)  # a record parked to be retried
        faults.check(self.settings.crash_at, faults.AFTER_LOCAL_COMMIT)
        await self.publisher.publish(result.outbox)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        self.committing = asyncio.create_task(self._commit(offsets))

    async def committed(self) -> None:
        """The last offset commit answered (its crash point, in tests, raises here)."""
        committing, self.committing = self.committing, None
        if committing is not None:
            await committing

    async def idle(self, stopping: bool = False) -> None:
        """Nothing came: the last commit answered, and the rows published deleted in a transaction of
        their own (when a batch comes, its transaction deletes them). A failure leaves them for the
        next transaction (or a restart's flush: consumers drop the copies)."""
        if not stopping:
            await self.committed()
        elif self.committing is not None:  # stopping: the commit's answer, whatever it is
            await asyncio.gather(self.committed(), return_exceptions=True)
        if self.processor.in_hand():
            try:
                await asyncio.to_thread(self.processor.mark_sent)
            except Exception as exc:
                log.debug("%s: deleting the rows published failed; the next transaction will: %s", self.name, exc)

    async def _apply(self, batch: Batch) -> tuple[Batch, BatchResult]:
        """Apply ``batch``; first, read again the ids of topics it may have outlived, and leave out
        (to read them again from their beginning) partitions of topics made again."""
        while True:
            try:
                return batch, await self.processor.apply([r for rs in batch.values() for r in rs], self.stop)
            except Unverified as unverified:  # below a position: is the topic still the one it was?
                await self.topics.read_ids(unverified.topics, self.stop)
            except StartedOver as over:  # read those partitions again from their beginning
                await self.topics.start_over(over.partitions)
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
            faults.check(self.settings.crash_at, faults.AFTER_OFFSET_COMMIT)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions: their new owner gets these records again,
            # and the inbox absorbs them.
            log.warning("%s: offset commit refused (%s); records will be redelivered", self.name, exc)
        except KafkaError as exc:  # any other refusal: the same, an offset not committed is always safe
            log.warning("%s: offset commit failed (%r); records will be redelivered", self.name, exc)

    async def flush_outbox(self) -> None:
        """Publish what a previous run committed but did not get to publish: at once when no other
        instance of the participant runs (its group has no member). When one does, the rows may be
        its own, published and about to be deleted (an instance starting beside a busy one, as in a
        rolling restart): publishing them would only copy them; the flusher publishes those still
        there after the grace period (engine.worker.flusher)."""
        pending = await asyncio.to_thread(self.processor.pending)
        if not pending:
            return
        try:
            _, members = await kafka.group_state(self.settings.bootstrap, self.name)
        except KafkaError:
            members = -1  # not known: the flusher's grace is the safe way
        if members:
            log.info("%s: %d unsent outbox rows, and another instance may be publishing them: published once "
                     "older than %gs", self.name, len(pending), self.settings.outbox_grace_seconds)  # fmt: skip
            return
        log.info("%s: flushing %d unsent outbox rows", self.name, len(pending))
        await self.publisher.publish(pending)
