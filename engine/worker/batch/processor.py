"""Step 2 of the participant loop: apply a batch in one local transaction, whatever it holds.

``BatchProcessor.apply`` is the whole ladder, and the only way in:

1. the **optimistic** pass: the batch in one transaction, no savepoints, one statement per table;
2. if a record erred, the **careful** pass: the batch again, each record in a savepoint under the
   retry policy (engine.worker.batch.careful, engine.worker.batch.failure);
3. if that fails with an error that is ours, not a record's, **one record at a time**: each
   record alone, carefully; one that still fails is dead-lettered in a transaction of its own
   (``internal_error: …``) — a row of the result, published by the loop like any other.

Throughout, the database being unavailable (engine.worker.batch.errors) rolls back what was under
way and the batch is tried again, as long as it takes, until a stop is asked for (``Interrupted``):
nothing is acknowledged meanwhile. What becomes of each record is decided first
(engine.worker.batch.fates); the database guard checks the database is still the participant's
(engine.worker.batch.guard).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Engine

from engine.broker.topicids import Incarnations
from engine.events import Event
from engine.participant import Participant
from engine.settings import Settings
from engine.store.outbox import OutboxRow
from engine.store.parked import NEWER_VERSION, ParkedRecord
from engine.wire.envelope import Envelope
from engine.wire.record import Record
from engine.worker.batch import transaction
from engine.worker.batch.careful import CarefulPass
from engine.worker.batch.context import Context
from engine.worker.batch.errors import Careful, Interrupted, RebuildRequired, StartedOver, Unverified, is_unavailable
from engine.worker.batch.guard import DatabaseGuard
from engine.worker.batch.optimistic import OptimisticPass
from engine.worker.batch.result import BatchResult
from engine.worker.rebuild import History

log = logging.getLogger(__name__)

DB_RETRY_MAX_SECONDS = 5.0
T = TypeVar("T")


class BatchProcessor:
    """Applies batches of records for one participant against its database."""

    def __init__(
        self,
        participant: Participant,
        types: Mapping[str, type[Event]],
        engine: Engine,
        settings: Settings,
        history: History | Mapping[str, Sequence[Envelope]] | None = None,
    ) -> None:
        self.ctx = Context(participant, types, engine, settings, history)
        self.guard = DatabaseGuard(participant.name, engine, self.ctx.rebuild_table)
        self.participant, self.engine, self.settings = participant, engine, settings
        self.topics = Incarnations()  # each topic's id (the loop reads them)
        self.inbox, self.outbox, self.parked = self.ctx.inbox, self.ctx.outbox, self.ctx.parked

    @property
    def rebuilding(self) -> bool:
        return self.ctx.rebuilding

    @property
    def history(self) -> History:
        return self.ctx.history

    async def apply(self, records: Sequence[Record], stop: asyncio.Event | None = None) -> BatchResult:
        """The batch applied and committed; what it did. While the database is unavailable it is
        tried again (nothing was committed), until ``stop`` is set: ``Interrupted``."""
        delay = 0.05
        while True:
            try:
                return await self._ladder(records)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self.guard.doubt()
                if stop is not None and stop.is_set():
                    raise Interrupted from None
                log.warning("%s: database unavailable, retrying batch in %.2fs: %s", self.participant.name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    async def _ladder(self, records: Sequence[Record]) -> BatchResult:
        try:
            return await self._blocking(len(records), self._run, records, OptimisticPass)
        except Careful as first:
            failed = {first.event_id: first.error} if first.event_id else {}
        self.guard.doubt()  # a missing table fails the optimistic pass too
        try:
            return await asyncio.to_thread(self._run, records, lambda ctx, conn: CarefulPass(ctx, conn, failed))
        except (Interrupted, Careful, RebuildRequired, Unverified, StartedOver):
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise
            # A fault of ours, not the database's: no record may hold the partition for it.
            log.exception("%s: internal error applying a batch of %d; applying it record by record",
                          self.participant.name, len(records))  # fmt: skip
        total = BatchResult()
        for record in records:
            total.merge(await asyncio.to_thread(self._alone, record))
        return total

    def _run(self, records: Sequence[Record], kind: Callable[..., Any]) -> BatchResult:
        self.guard.check_file()
        result = transaction.run(self.ctx, self.guard, self.topics, records, kind)
        self.guard.trusted()
        return result

    def _alone(self, record: Record) -> BatchResult:
        """Last resort: ``record`` alone, carefully; if that fails too, its dead letter alone."""
        try:
            return self._run([record], lambda ctx, conn: CarefulPass(ctx, conn, {}))
        except Exception as exc:
            if is_unavailable(exc) or isinstance(exc, Interrupted | RebuildRequired):
                raise
            log.exception("%s: dead-lettering %s[%d]@%d: it cannot be applied", self.participant.name,
                          record.topic, record.partition, record.offset)  # fmt: skip
            return transaction.dead_letter_alone(self.ctx, record, f"internal_error: {type(exc).__name__}: {exc}")

    async def _blocking(self, size: int, work: Callable[..., T], *args: Any) -> T:
        """Database work: inline for a small batch (well under a millisecond here, and a
        thread hand-off was measured to cost ~3 ms on a busy 2-core machine), in a worker
        thread for a large one, so the event loop stays free for fetches and heartbeats."""
        if size <= self.settings.inline_batch_max:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    # -- what the loop asks between batches ------------------------------------------------

    def rebuilt(self) -> None:
        """The rebuild is over: decide anew from now on (what is parked is applied first)."""
        self.ctx.rebuilding = False

    def drained(self) -> None:
        """Nothing parked is left: the recorded history has no further use; let it go."""
        self.ctx.history.close()

    def parked_records(self, limit: int) -> tuple[list[ParkedRecord], float | None]:
        """The parked records to apply now (with ``apply``), and when the next one put off is due.
        They leave the parked table in the transaction that applies them."""
        with self.engine.connect() as conn:
            self.guard.check(conn, self.ctx.rebuilding, always=True)  # the database still ours?
            return self.parked.due(conn, time.time(), limit), self.parked.next_due(conn)

    def wake_held(self) -> int:
        """Records held for a newer version are due now: this instance may read them (it has just
        started, perhaps upgraded); how many."""
        return self.parked.wake(self.engine, NEWER_VERSION)

    def restart_positions(self, starts: Mapping[tuple[str, int], tuple[str, int]]) -> None:
        """Partitions of a topic made again: their positions start over at ``starts`` ((topic,
        partition) → (the topic's new id, the offset its records begin at)); engine.worker.loop has
        moved the consumer group there first."""
        with self.engine.begin() as conn:
            self.inbox.restart(conn, starts)

    def prune_inbox(self, older_than_hours: float) -> int:
        """Forget events applied more than ``older_than_hours`` ago (see inbox_retention_hours)."""
        return self.inbox.prune(self.engine, older_than_hours)

    def pending(self) -> list[OutboxRow]:
        """Unsent outbox rows of this participant, oldest first (flushed at start-up)."""
        return self.outbox.pending(self.engine)

    def sent(self, rows: Sequence[OutboxRow]) -> None:
        """Rows published and acknowledged: the next transaction deletes them (or ``mark_sent``)."""
        self.ctx.sent.update(row.id for row in rows if row.id)

    def in_hand(self) -> set[int]:
        """Ids of this instance's rows published, not yet deleted: the flusher leaves them alone."""
        return self.ctx.sent

    def mark_sent(self) -> None:
        """Delete the rows published since the last transaction, in a transaction of their own (when
        no batch comes to do it: idle, or stopping)."""
        if self.ctx.sent:
            with self.engine.begin() as conn:
                sent = self.ctx.delete_sent(conn)
            self.ctx.sent.difference_update(sent)
