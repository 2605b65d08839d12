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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from sqlalchemy.exc import DBAPIError

from engine.observe import metrics
from engine.settings import Settings
from engine.store.parked import ParkedRecord
from engine.wire.text import printable, saga_option
from engine.worker import crash
from engine.worker.batch.processing import (
    BatchProcessor,
    BatchResult,
    Careful,
    Interrupted,
    OutboxRow,
    RebuildRequired,
    Record,
    StartedOver,
    Unverified,
    dead_letter_row,
    is_unavailable,
)
from engine.worker.flusher import OutboxFlusher
from engine.worker.rebuild import Rebuild

log = logging.getLogger(__name__)

DB_RETRY_MAX_SECONDS = 5.0
PRUNE_EVERY_SECONDS = 300  # a short window's worth of rows is pruned a little at a time
UNPARK_EVERY_SECONDS = 1.0  # how often a participant with nothing parked looks again
PRUNE_RETRY_SECONDS = 60  # after a failed prune
TOPIC_IDS_EVERY_SECONDS = 2.0  # how often the ids of the topics read are read again
T = TypeVar("T")


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
        if processor.participant.compensator:  # served at 0 from the start: an alert can watch it grow
            metrics.sagas_needing_operator.labels(self.name)
        self.ready = asyncio.Event()
        self._next_unpark = 0.0
        self.prune_every = PRUNE_EVERY_SECONDS
        self.topics = processor.topics
        self.topics.watched = True  # its records' topics are known by their ids from now on
        self.flusher = OutboxFlusher(
            self.name, processor.outbox, processor.engine, self._send_once, settings.outbox_grace_seconds
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.producer.start()
        try:
            await self.flush_outbox()
            await self.consumer.start()
            with contextlib.suppress(KafkaError):  # else read when a batch needs them
                await self.topics.read(self.consumer, self.processor.participant.topics)
            watcher = asyncio.create_task(self._propagate_stop(stop))
            pruner = asyncio.create_task(self._prune_inbox(stop))
            flusher = asyncio.create_task(self.flusher.run(stop))
            topic_watch = asyncio.create_task(self._watch_topics(stop))
            metrics.rebuilding.labels(self.name).set(int(self.processor.rebuilding))
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
                for task in (watcher, pruner, flusher, topic_watch):
                    task.cancel()
                await asyncio.gather(watcher, pruner, flusher, topic_watch, return_exceptions=True)
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
                metrics.rebuilding.labels(self.name).set(1)
                if self.rebuild is None or await self.rebuild.over(self.consumer):
                    self.processor.rebuilt()
                    metrics.rebuilding.labels(self.name).set(0)
                    log.info("%s: rebuilt; now applying what was parked, then deciding anew", self.name)
                    self._next_unpark = 0.0
            elif time.monotonic() >= self._next_unpark:
                self._next_unpark = await self._unpark()
        except DBAPIError as exc:  # unavailable, or its tables gone: the next batch checks which
            self.processor.suspect = True
            log.warning("%s: database error between batches, trying again: %s", self.name, printable(str(exc), 300))
            self._next_unpark = time.monotonic() + UNPARK_EVERY_SECONDS

    async def _unpark(self) -> float:
        """Apply the parked records that are due, each saga's in order; when to look again (monotonic)."""
        records, next_due = await asyncio.to_thread(self.processor.parked_records, self.settings.batch_size)
        if records:
            result = await self._apply_with_db_retry(records)
            self._account(result)
            await self.publish(result.outbox)
        count = 0  # none due and none to retry later: none parked
        if records or next_due is not None:
            count = await asyncio.to_thread(self.processor.parked.count, self.processor.engine)
        metrics.parked.labels(self.name).set(count)
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

    async def _propagate_stop(self, stop: asyncio.Event) -> None:
        """Tell a worker thread waiting for the database that a stop was asked for."""
        await stop.wait()
        self.processor.stopping.set()

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        records = [record for partition in batch.values() for record in partition]
        now = time.time()
        for record in records:
            metrics.schedule_to_start.labels(self.name).observe(max(0.0, now - record.timestamp / 1000))
        started = time.perf_counter()
        while True:
            try:
                result = await self._apply_with_db_retry(records)
                break
            except Unverified as unverified:  # below a position: is the topic still the one it was?
                await self._read_topic_ids(unverified.topics)
            except StartedOver as over:  # read those partitions again from their beginning
                await self._start_over(over.partitions)
                batch = {tp: rs for tp, rs in batch.items() if (tp.topic, tp.partition) not in over.partitions}
                records = [record for partition in batch.values() for record in partition]
                if not records:
                    return
        metrics.batch_latency.labels(self.name).observe(time.perf_counter() - started)
        self._account(result)
        if result.next_due is not None:  # a record was parked to be retried
            self._next_unpark = min(self._next_unpark, self._monotonic(result.next_due))
        crash.check(self.settings.crash_at, crash.AFTER_LOCAL_COMMIT)
        await self.publish(result.outbox)
        offsets = {tp: records_[-1].offset + 1 for tp, records_ in batch.items()}
        assigned = self.consumer.assignment()
        for tp, position in offsets.items():
            # A rebalance may have taken the partition while the batch was applied.
            highwater = self.consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                metrics.consumer_lag.labels(self.name, tp.topic, str(tp.partition)).set(max(0, highwater - position))
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
                if self.processor.stopping.is_set():
                    raise Interrupted from None
                log.warning("%s: reading the ids of %s failed, retrying: %s", self.name, ", ".join(topics), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

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

    def _account(self, result: BatchResult) -> None:
        if result.parked:
            metrics.parked.labels(self.name).inc(result.parked)
        for type_, count in result.applied.items():
            metrics.events_consumed.labels(self.name, type_).inc(count)
        metrics.duplicates.labels(self.name).inc(result.duplicates)
        metrics.skipped.labels(self.name).inc(result.skipped)
        for reason in result.dead_letters:
            metrics.dead_letters.labels(self.name, reason.split(":", 1)[0]).inc()
        for error in result.retries:
            metrics.retries.labels(self.name, error).inc()
        for reason in result.failures:
            metrics.step_failures.labels(self.name, reason).inc()
        for undone in result.compensations:
            metrics.compensations.labels(self.name, "undone" if undone else "noop").inc()
        for saga_id, (reason, dlq) in result.operator.items():  # committed: the dead letter is in the outbox
            metrics.sagas_needing_operator.labels(self.name).inc()
            saga = printable(saga_id, 200)
            log.warning(
                "saga %s NEEDS AN OPERATOR: %s could not compensate (%s); once fixed: pokesaga dlq replay %s %s",
                saga, self.name, printable(reason, 500), dlq, saga_option(saga),
            )  # fmt: skip

    async def _apply_with_db_retry(self, records: Sequence[Record]) -> BatchResult:
        """Apply the batch; while the database is unavailable, try again (nothing was committed)."""
        delay = 0.05
        while True:
            try:
                return await self._apply(records)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self.processor.suspect = True
                if self.processor.stopping.is_set():
                    raise Interrupted from None
                log.warning("%s: database unavailable, retrying batch in %.2fs: %s", self.name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    async def _apply(self, records: Sequence[Record]) -> BatchResult:
        """Optimistic first; record by record (in a thread: retries wait) when a record errs."""
        try:
            return await self._blocking(len(records), self.processor.apply_optimistically, records)
        except Careful as error:
            first = error
        self.processor.suspect = True  # a missing table fails the optimistic pass too
        try:
            return await asyncio.to_thread(self.processor.apply_carefully, records, first)
        except (Interrupted, Careful, RebuildRequired, Unverified, StartedOver):
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise
            # A fault of ours, not the database's: no record may hold the partition for it.
            log.exception("%s: internal error applying a batch of %d; applying it record by record", self.name,
                          len(records))  # fmt: skip
        return await self._one_by_one(records)

    async def _one_by_one(self, records: Sequence[Record]) -> BatchResult:
        """Last resort: each record alone; one that still fails is dead-lettered straight to the broker."""
        total = BatchResult()
        for record in records:
            try:
                result = await asyncio.to_thread(self.processor.apply_carefully, [record])
            except Exception as exc:
                if is_unavailable(exc) or isinstance(exc, Interrupted | RebuildRequired):
                    raise
                log.exception("%s: dead-lettering %s[%d]@%d: it cannot be applied", self.name, record.topic,
                              record.partition, record.offset)  # fmt: skip
                reason = f"internal_error: {type(exc).__name__}: {exc}"
                row = dead_letter_row(self.name, record, reason, self.settings.max_message_bytes)
                await self._send([OutboxRow(0, row["topic"], row["key"], row["value"], row["headers"], "dead_letter")])
                if isinstance(record, ParkedRecord):  # dead-lettered: it leaves the parked records
                    await asyncio.to_thread(self.processor.forget_parked, record)
                result = BatchResult(dead_letters=[reason])
            total.merge(result)
        return total

    async def _blocking(self, size: int, work: Callable[..., T], *args: Any) -> T:
        """Database work: inline for a small batch (well under a millisecond here, and a
        thread hand-off was measured to cost ~3 ms on a busy 2-core machine), in a worker
        thread for a large one, so the event loop stays free for fetches and heartbeats."""
        if size <= self.settings.inline_batch_max:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Publish ``rows`` in order, wait for every acknowledgement, then mark them sent."""
        if not rows:
            return
        await self._send(rows)
        for row in rows:
            metrics.events_published.labels(self.name, row.type).inc()
        crash.check(self.settings.crash_at, crash.AFTER_PUBLISH)
        await self._blocking(len(rows), self.processor.mark_sent, [row.id for row in rows])
        crash.check(self.settings.crash_at, crash.AFTER_MARK_SENT)

    async def _send(self, rows: Sequence[OutboxRow]) -> None:
        """Send ``rows`` in order and wait for every acknowledgement (acks=all), as long as it takes."""
        while True:
            try:
                await self._send_once(rows)
                return
            except KafkaError as exc:
                # Not acknowledged: send again (consumers dedupe by event id).
                log.warning("%s: publish failed, retrying: %s", self.name, exc)
                await asyncio.sleep(0.5)

    async def _send_once(self, rows: Sequence[OutboxRow]) -> None:
        """Send ``rows`` in order and wait for every acknowledgement; KafkaError when one is refused."""
        futures = [
            await self.producer.send(
                row.topic, row.value, key=row.key, headers=[(k, v.encode()) for k, v in row.headers]
            )
            for row in rows
        ]
        await asyncio.gather(*futures)

    async def flush_outbox(self) -> None:
        """Publish what a previous run committed but did not get to publish."""
        pending = await asyncio.to_thread(self.processor.pending)
        if pending:
            log.info("%s: flushing %d unsent outbox rows", self.name, len(pending))
            await self.publish(pending)
