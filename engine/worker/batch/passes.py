"""A pass: one attempt at a batch in one open transaction, and what it has written so far.

Two kinds, one interface. The **optimistic** pass (engine.worker.batch.optimistic) holds every
write until the end and sends one statement per table; an error that is a record's rolls the
whole pass back (``Careful``). The **careful** pass (engine.worker.batch.careful) applies each
record in a savepoint under the retry policy, so one record's error is that record's alone.
What they share is here: what each fate does, what a handler is given, the rows it publishes.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from engine.events import Event, FailureEvent, attributed
from engine.observe import tracing
from engine.participant import UnitOfWork
from engine.store import inbox
from engine.store.outbox import event_row
from engine.store.parked import NEWER_VERSION, REBUILDING, WAITING, ParkedRecord
from engine.wire import notices
from engine.wire.codec import decode_event
from engine.wire.deadletter import RECORD_OVERHEAD, dead_letter_row, dead_letters, headers_size
from engine.wire.envelope import Envelope, caused_ids, wrap
from engine.wire.record import Record
from engine.wire.text import printable
from engine.worker.batch.context import Context
from engine.worker.batch.errors import GAVE_UP, TooLarge
from engine.worker.batch.fates import APPLY, DUPLICATE, PARK, REJECT, SKIP, Item
from engine.worker.batch.result import BatchResult

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]


class Pass(ABC):
    """One attempt at a batch, in the transaction of ``conn``; ``result`` is what it did."""

    def __init__(self, ctx: Context, conn: Connection, repository_conn: Any) -> None:
        self.ctx = ctx
        self.conn = conn
        self.repo = ctx.participant.repository(repository_conn)
        self.result = BatchResult()
        self.blocked: set[str] = set()  # sagas whose record this pass parked to retry
        self.kept: set[int] = set()  # parked rows (ids) that stay parked

    # -- what each kind does its own way ---------------------------------------------

    @abstractmethod
    def apply(self, item: Item) -> None:
        """Run the handler for ``item`` and write what it decided."""

    @abstractmethod
    def write(self, inbox_rows: Rows, parked_rows: Rows | None = None, outbox_rows: Rows | None = None) -> None:
        """Write a record's rows: at once (careful) or with the batch's at the end (optimistic)."""

    @abstractmethod
    def finish(self) -> None:
        """Everything held is written (optimistic); nothing to do when each record was written at once."""

    # -- what each fate does ------------------------------------------------------------

    def do(self, item: Item) -> None:
        if item.action == APPLY and item.envelope is not None and item.envelope.sagaid in self.blocked:
            # An earlier record of its saga was just parked to be retried: this one waits behind it.
            if isinstance(item.record, ParkedRecord):
                self.kept.add(item.record.id)
                return
            item = item.but(PARK, WAITING)
        if item.action == SKIP:
            self.result.skipped += 1
        elif item.action == DUPLICATE:
            self.result.duplicates += 1
        elif item.action == REJECT:
            self.dead_letter(item, item.reason)
        elif item.action == APPLY and item.event is None:
            self.hold(item)
        elif item.action == PARK:
            assert item.envelope is not None
            self.write([], [self.ctx.parked.row(item.record, item.envelope, item.reason or REBUILDING)])
            self.result.parked += 1
        else:
            self.apply(item)

    def hold(self, item: Item) -> None:
        """A record whose event is newer than this instance reads (``item.reason``): parked, its saga's
        later records behind it, looked at again after ``newer_version_wait_seconds``, then twice as
        long each time (an instance starting looks at once: engine.store.parked ``wake``), until an
        instance that reads it takes it; dead-lettered once held ``newer_version_hold_hours``."""
        ctx, record, envelope, settings = self.ctx, item.record, item.envelope, self.ctx.settings
        assert envelope is not None
        now = time.time()
        first = not isinstance(record, ParkedRecord) or record.reason != NEWER_VERSION  # held for the first time
        held_since = record.parked_at if isinstance(record, ParkedRecord) and not first else now
        if now - held_since > settings.newer_version_hold_hours * 3600:
            reason = f"{item.reason}; held {settings.newer_version_hold_hours:g} h, no instance took it"
            if ctx.participant.compensator:  # a compensation not applied: the unwinding stops here
                self.needs_operator(item, reason, None)
            else:
                self.dead_letter(item, reason)
            return
        holds = record.attempts if isinstance(record, ParkedRecord) and not first else 0  # looks so far
        due_at = now + settings.newer_version_wait(holds)
        if isinstance(record, ParkedRecord):
            # Parked until now for another reason (behind its saga's record being retried, or while its
            # participant rebuilt): the hold's bound counts from now.
            since = now if first else None
            ctx.parked.retry_later(self.conn, record.id, record.attempts + 1, due_at, item.reason, NEWER_VERSION, since)
            self.kept.add(record.id)
        else:
            self.write([], [ctx.parked.row(record, envelope, NEWER_VERSION, 1, due_at, item.reason)])
            self.result.parked += 1
        if first:  # read now, or parked until now for another reason: said once, not at each look
            log.warning("%s: holding %s of saga %s until an upgraded instance takes it: %s", ctx.name, envelope.type,
                        printable(envelope.sagaid, 200), item.reason)  # fmt: skip
            if ctx.participant.retries_topic:  # observers (the tracker) show the saga waiting, and why
                said = notices.notice(
                    envelope, participant=ctx.name, source=ctx.participant.source, attempt=1, maximum_attempts=0,
                    next_attempt_at=due_at, error=item.reason,
                )  # fmt: skip
                self.write([], [], [event_row(ctx.name, said, ctx.participant.retries_topic, [])])
        self.blocked.add(envelope.sagaid)
        self.result.held.append(envelope.type)
        self.result.next_due = min(self.result.next_due or due_at, due_at)

    def dead_letter(self, item: Item, reason: str, attempts: int | None = None) -> None:
        """``item``'s dead letter, in the outbox. A record refused at the door is also marked in the
        inbox by its coordinates, so a replay of the topic does not dead-letter it twice; a record
        that failed while being applied is not: replaying it (after a fix) applies it."""
        record, ctx = item.record, self.ctx
        log_dead_letter(ctx.name, record, reason)
        row = dead_letter_row(ctx.name, record, reason, ctx.settings.max_message_bytes, attempts)
        marker = ctx.inbox.row(item.marker, printable(_key_of(record), 200), inbox.DEAD_LETTER)
        self.write([marker] if item.action == REJECT else [], [], [row])
        self.result.dead_letters.append(reason)

    def needs_operator(self, item: Item, reason: str, attempts: int | None) -> None:
        """A compensation that cannot be done: its dead letter, and its saga reported to a person."""
        assert item.envelope is not None
        self.dead_letter(item, reason, attempts)
        self.result.operator[item.envelope.sagaid] = (reason, dead_letters(item.record.topic))

    # -- running a handler ----------------------------------------------------------------

    def span(self, item: Item) -> Any:
        """The span of applying ``item``; it yields what gives the context headers of what it publishes."""
        record = item.record
        assert item.envelope is not None
        return tracing.step(self.ctx.name, item.envelope, record.topic, record.partition, record.offset, record.headers)

    def decide(self, item: Item, attempt: Any) -> Sequence[Event]:
        """The events the handler publishes for ``item``: a recorded give-up first (rebuild), else ``attempt``."""
        envelope, event, on_exhausted = item.envelope, item.event, self.ctx.participant.on_exhausted
        assert envelope is not None and event is not None
        uow = self.unit_of_work(envelope)
        gave_up = next((e for e in uow.recorded if isinstance(e, FailureEvent) and e.reason in GAVE_UP), None)
        if gave_up is not None and on_exhausted is not None:
            # The first time round this step gave up: give up again, with the same words.
            return [on_exhausted(event, uow, gave_up.reason, gave_up.detail)]
        deadline = self.ctx.deadline(envelope)
        if deadline is not None and on_exhausted is not None and time.time() >= deadline:
            detail = f"the saga's deadline {envelope.sagadeadline.isoformat()} had passed"  # type: ignore[union-attr]
            return [on_exhausted(event, uow, "deadline_exceeded", detail)]
        return attempt(envelope, event, uow)

    def once(self, envelope: Envelope, event: Event, uow: UnitOfWork[Any]) -> Sequence[Event]:
        """The handler, once."""
        self.ctx.faults.maybe_fail(envelope.sagaid)
        return self.ctx.participant.handlers[envelope.type](event, uow)

    def unit_of_work(self, envelope: Envelope) -> UnitOfWork[Any]:
        recorded = tuple(decode_event(e, self.ctx.types) for e in self.ctx.recorded(envelope))
        return UnitOfWork(envelope.sagaid, envelope.id, self.repo, self.ctx.settings, recorded)

    def rows(self, cause: Envelope, produced: Sequence[Event], context: list[list[str]]) -> Rows:
        """The outbox rows of what ``cause`` produced; ``TooLarge`` before anything is committed."""
        ctx, rows = self.ctx, []
        on_the_topics = {e.id for e in ctx.recorded(cause)}  # a recorded decision is published already
        for event in produced:
            event = attributed(event, ctx.participant.service)
            envelope = wrap(
                event, saga_id=cause.sagaid, source=ctx.participant.source, causation_id=cause.id,
                deadline=cause.sagadeadline, validate=False,  # the cause was validated, and so was the event
                version=ctx.pins.get(type(event).__name__),
            )  # fmt: skip
            if on_the_topics and on_the_topics.intersection(caused_ids(cause.sagaid, cause.id, envelope.type)):
                continue  # recorded under this id, or under the one derived before the saga id was in it
            row = event_row(ctx.name, envelope, type(event).topic, context)
            size = len(row["value"]) + len(row["key"]) + headers_size(row["headers"]) + RECORD_OVERHEAD
            if size > ctx.settings.max_message_bytes:
                raise TooLarge(f"{envelope.type} would be {size} bytes; the limit is {ctx.settings.max_message_bytes}")
            rows.append(row)
        return rows

    def applied(self, envelope: Envelope, consumed: Event, produced: Sequence[Event]) -> None:
        """Count what applying ``consumed`` did: a step's failure, a compensation's work or no-op."""
        result, compensator = self.result, self.ctx.participant.compensator
        result.applied[envelope.type] = result.applied.get(envelope.type, 0) + 1
        for out in produced:
            if not isinstance(out, FailureEvent):
                continue
            if compensator and isinstance(consumed, FailureEvent):
                result.compensations.append(len(out.undone) > len(consumed.undone))
            elif not compensator:
                result.failures.append(out.reason)

    def inbox_row(self, envelope: Envelope) -> dict[str, Any]:
        return self.ctx.inbox.row(envelope.id, envelope.sagaid, envelope.type)


def log_dead_letter(name: str, record: Record, reason: str) -> None:
    log.warning("%s: dead letter from %s[%d]@%d: %s", name, record.topic, record.partition, record.offset,
                        printable(reason, 300))  # fmt: skip


def _key_of(record: Record) -> str:
    return (record.key or b"")[:800].decode("utf-8", "replace")
