"""Steps 1 and 2 of the participant loop: validate a batch and apply it in one transaction.

Each record of a batch meets one of these fates, in this order:

- it cannot be read, parsed or validated, its event type is not one of the saga's, or it is a
  known event on the wrong topic: a **dead letter** with its reason;
- it is an event of the saga that another participant on the same topic handles: **skipped**;
- its event id is in the inbox (or parked) for the same saga and type: a **duplicate**, nothing changes;
- its event id was applied for another saga, or its saga already had an event of this type
  under another id: a **dead letter** (one saga's ids never silence or replay another's);
- its participant is rebuilding and has no recorded decision for it, or its saga has a record
  parked: **parked**, to be applied later, in arrival order (engine.store.parked);
- otherwise it is **applied**: inbox row + the handler's state change + outbox rows. A forward
  step that receives a saga past its deadline (``sagadeadline``) does not run its handler: the
  step fails with reason ``deadline_exceeded``. A compensation is never cut short.

Who is at fault decides what an error does. The database or broker being unavailable
(``OperationalError``, ``InterfaceError``) rolls back the whole batch, which the loop retries:
nothing is acknowledged. Any other error is the record's: the batch is applied again record
by record (``apply_carefully``), each record in a savepoint. A record that failed with a
retryable error is **parked to be retried** (engine.store.parked: attempts, next attempt at, last
error; a retry notice for observers, engine.wire.notices), and later records of its saga wait
behind it; its offset is committed with the batch, and the partition goes on. The loop tries it
again when it is due. When its attempts run out, or its saga's deadline passes, it takes its
failure path (a forward step publishes its failure event; a compensator dead-letters it). If
the failure path itself fails, the record is dead-lettered. A compensation is tried at most
``compensation_attempts`` times, and only once when what it would publish fails validation (a
pydantic ``ValidationError`` of one of the saga's events: the same data fails the same way every
time); then it is dead-lettered (``compensation_failed: …``, with ``pokesaga.dlq.attempts``) and
its saga is reported as needing an operator (``BatchResult.operator``: a WARNING line and
``pokesaga_sagas_needing_operator_total`` once the transaction is committed). Nothing a record carries can make a
batch retry forever, nor hold anyone else's records back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy import event as sa_event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from engine.broker.topicids import Incarnations
from engine.broker.unreadable import unreadable_reason
from engine.events import Event, FailureEvent
from engine.observe import tracing
from engine.ops.deadletters import RECORD_OVERHEAD, dead_letter_row, dead_letters, headers_size
from engine.participant import Participant, Rejected, UnitOfWork
from engine.retry import FaultInjector
from engine.settings import Settings
from engine.store import inbox
from engine.store.db import messaging_tables, positions_table, rebuild_tables
from engine.store.outbox import Outbox, OutboxRow, event_row
from engine.store.parked import REBUILDING, RETRYING, WAITING, Parked, ParkedRecord
from engine.wire import notices as retrynotice
from engine.wire.codec import BadRecord, decode_envelope, decode_event
from engine.wire.envelope import Envelope, caused_ids, wrap
from engine.wire.record import Record
from engine.wire.text import printable
from engine.worker.batch.held import DeferredFailed, DeferredInserts
from engine.worker.history import key as history_key
from engine.worker.rebuild import CREATED, History, RebuildRequired

log = logging.getLogger(__name__)

# The reasons of a step that could not be done at all; a rebuild gives up again with them.
GAVE_UP = ("retries_exhausted", "non_retryable_error", "event_too_large", "deadline_exceeded")


def is_unavailable(error: BaseException) -> bool:
    """The database itself, not the record: retry the batch, acknowledge nothing."""
    if isinstance(error, OperationalError | InterfaceError | DisconnectionError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


@dataclass
class BatchResult:
    """What one batch did; ``outbox`` is what must now be published, in order."""

    outbox: list[OutboxRow] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    skipped: int = 0
    dead_letters: list[str] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)  # error type of each retry
    failures: list[str] = field(default_factory=list)  # reason of each step failure published
    compensations: list[bool] = field(default_factory=list)  # True: something undone; False: a no-op
    parked: int = 0  # records newly parked (a parked record put off again is not counted twice)
    # Sagas whose compensation was dead-lettered: saga id -> (reason, the dead-letter topic)
    operator: dict[str, tuple[str, str]] = field(default_factory=dict)
    next_due: float | None = None  # when the earliest record parked to be retried by this batch is due

    def merge(self, other: BatchResult) -> None:
        """Add what ``other`` did (a later part of the same batch) to this result."""
        self.outbox += other.outbox
        for type_, count in other.applied.items():
            self.applied[type_] = self.applied.get(type_, 0) + count
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        self.dead_letters += other.dead_letters
        self.retries += other.retries
        self.failures += other.failures
        self.compensations += other.compensations
        self.parked += other.parked
        self.operator.update(other.operator)
        if other.next_due is not None:
            self.next_due = min(self.next_due or other.next_due, other.next_due)


class Careful(Exception):
    """An error that is a record's, in the optimistic pass: apply the batch record by record."""

    def __init__(self, event_id: str | None, error: Exception) -> None:
        super().__init__(event_id)
        self.event_id = event_id
        self.error = error


class Unverified(Exception):
    """A record read from the broker sits below its partition's position, and its topic's id was
    not read since the record was fetched: was the topic made again? Read the ids, then apply."""

    def __init__(self, topics: set[str]) -> None:
        super().__init__(", ".join(sorted(topics)))
        self.topics = topics


class StartedOver(Exception):
    """Partitions whose topic was made again since their position was recorded (another topic id):
    they must be read again from their beginning (nothing of the batch was applied)."""

    def __init__(self, partitions: dict[tuple[str, int], str]) -> None:
        super().__init__(", ".join(f"{t}[{p}]" for t, p in sorted(partitions)))
        self.partitions = partitions  # (topic, partition) -> the topic's id now


class Interrupted(Exception):
    """A stop was requested while the batch waited for its database: it is abandoned, uncommitted."""


class TooLarge(Exception):
    """An event would exceed the largest record pokesaga publishes (``max_message_bytes``)."""


class _GaveUp(Exception):
    def __init__(self, reason: str, detail: str, attempts: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.attempts = attempts


@dataclass(frozen=True)
class _Item:
    """A record and what is to be done with it: ``apply``, ``park``, ``skip``, ``duplicate`` or ``reject``."""

    record: Record
    action: str
    envelope: Envelope | None = None
    event: Event | None = None
    reason: str = ""

    @property
    def marker(self) -> str:
        return inbox.marker(self.record)


@dataclass
class _Pass:
    """One attempt at a batch: its open transaction, and what it has written so far."""

    conn: Connection
    repo: Any
    careful: bool
    failed: dict[str, Exception]
    held: DeferredInserts | None = None
    result: BatchResult = field(default_factory=BatchResult)
    inbox: list[dict[str, Any]] = field(default_factory=list)  # optimistic: written at the end
    rows: list[dict[str, Any]] = field(default_factory=list)
    parked: list[dict[str, Any]] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)  # sagas whose record this pass parked to retry
    kept: set[int] = field(default_factory=set)  # parked rows (ids) that stay parked


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
        self.participant = participant
        self.types = types  # every event of the saga, by type name
        # Rebuilding (engine.worker.rebuild): what it published before, by cause id. Only records with a
        # recorded decision are applied; the others are parked until the rebuild ends. The history
        # is on disk, a batch's read at a time (engine.worker.history).
        self.rebuilding = history is not None
        self.history = History.of(history if history is not None else {})
        self.engine = engine
        self.settings = settings
        inbox_table, outbox_table = messaging_tables(participant.metadata)
        self.rebuild_table, parked_table = rebuild_tables(participant.metadata)
        self.inbox = inbox.Inbox(inbox_table, participant.name, parked_table, positions_table(participant.metadata))
        self.topics = Incarnations()  # each topic's id (the loop reads them): positions hold on one incarnation
        self.outbox = Outbox(outbox_table, participant.name)
        self.policy = settings.retry_policy(participant.name, participant.compensator)
        self.parked = Parked(parked_table, participant.name, self.policy.maximum_interval)
        self.faults = FaultInjector(settings.faults, participant.name, stall=settings.stall)
        self.stopping = threading.Event()
        # Set after an error that may mean the database was lost (unavailable, or the optimistic
        # pass failing, a new connection): the next transaction first checks it is still this
        # participant's. A PostgreSQL database dropped and created again is only a reconnection.
        self.suspect = True
        sa_event.listen(engine, "connect", self._connected)
        self._file = _database_file(engine)  # SQLite: the file, and which file it was at the start
        self.watched = False  # check that the database is still this participant's (engine.worker.run sets it)

    # -- the two passes --------------------------------------------------------------

    def process(self, records: Sequence[Record]) -> BatchResult:
        """The batch in one local transaction: optimistic first, record by record if a record errs."""
        try:
            return self.apply_optimistically(records)
        except Careful as first:
            return self.apply_carefully(records, first)

    def apply_optimistically(self, records: Sequence[Record]) -> BatchResult:
        """No savepoints: fast. Raises ``Careful`` (all rolled back) when an error is a record's."""
        return self._pass(records, careful=False, failed={})

    def apply_carefully(self, records: Sequence[Record], first: Careful | None = None) -> BatchResult:
        """Record by record, each in a savepoint, under the retry policy; it may wait (run it in a thread).

        ``first``: the optimistic pass's error; that attempt happened and counts against the policy."""
        failed = {first.event_id: first.error} if first is not None and first.event_id else {}
        return self._pass(records, careful=True, failed=failed)

    def rebuilt(self) -> None:
        """The rebuild is over: decide anew from now on (what is parked is applied first)."""
        self.rebuilding = False

    def drained(self) -> None:
        """Nothing parked is left: the recorded history has no further use; let it go."""
        self.history.close()

    def _connected(self, *_: object) -> None:
        self.suspect = True

    def parked_records(self, limit: int) -> tuple[list[ParkedRecord], float | None]:
        """The parked records to apply now (``apply_optimistically``/``apply_carefully``), and when
        the next one put off is due. They leave the parked table in the transaction that applies them."""
        with self.engine.connect() as conn:
            self._check_database(conn)  # and, once a second or so, that the database is still ours
            return self.parked.due(conn, time.time(), limit), self.parked.next_due(conn)

    def forget_parked(self, record: ParkedRecord) -> None:
        """A parked record that was dead-lettered straight to the broker (the loop's last resort)."""
        with self.engine.begin() as conn:
            self.parked.lock(conn)
            self.parked.delete(conn, [record.id])
            self.parked.promote(conn, [record.saga_id], time.time())

    def _pass(self, records: Sequence[Record], careful: bool, failed: dict[str, Exception]) -> BatchResult:
        unparked = [record.id for record in records if isinstance(record, ParkedRecord)]
        self._check_file()
        with self.engine.begin() as conn:
            if self.suspect:
                self._check_database(conn)
            if unparked:
                self.parked.lock(conn)  # one instance at a time applies the parked records
                due = self.parked.still_due(conn, unparked, time.time())
                records = [r for r in records if not isinstance(r, ParkedRecord) or r.id in due]
                unparked = [i for i in unparked if i in due]
            fresh = [r for r in records if not isinstance(r, ParkedRecord)]  # read from the broker
            known = self.inbox.positions(conn) if fresh else {}
            behind = self._behind(fresh, known)
            decoded = [_Item(r, "duplicate") if id(r) in behind else self._decode(r) for r in records]
            held = None if careful else DeferredInserts(conn)  # optimistic: the handlers' inserts, per table
            p = _Pass(conn, self.participant.repository(cast(Connection, held) or conn), careful, failed, held)
            planned = self._plan(conn, decoded)
            if not unparked and conn.dialect.name == "postgresql" and any(i.reason == WAITING for i in planned):
                # Parked behind a head another instance may be applying now: decide again under the
                # parked records' lock, so that instance's promotion of the next head sees this one.
                self.parked.lock(conn)
                planned = self._plan(conn, decoded)
            for item in planned:
                self._do(p, item)
            if not careful:
                self._flush(p)
            self.inbox.advance(conn, known, fresh, self.topics.ids)
            if unparked:
                gone = [r for r in records if isinstance(r, ParkedRecord) and r.id not in p.kept]
                self.parked.delete(conn, [r.id for r in gone])
                self.parked.promote(conn, [r.saga_id for r in gone], time.time())
        self.suspect = False
        return p.result

    def _check_file(self) -> None:
        """SQLite: ``RebuildRequired`` if the database file was deleted or replaced since the start
        (the open connections would go on writing to a file no one will ever read)."""
        if self.watched and self._file is not None and _database_file(self.engine) != self._file:
            raise RebuildRequired(f"{self.participant.name}: its database file was deleted or replaced")

    def _check_database(self, conn: Connection) -> None:
        """``RebuildRequired`` if the database lost its tables or was marked for a rebuild since the start."""
        if not self.watched:
            return
        self._check_file()
        if not inspect(conn).has_table(self.rebuild_table.name):
            raise RebuildRequired(f"{self.participant.name}: its database has lost its tables")
        table, me = self.rebuild_table, self.participant.name
        marked = {consumer: positioned for consumer, positioned in conn.execute(
            select(table.c.consumer, table.c.targets.is_not(None)))}  # fmt: skip
        if CREATED in marked or (me in marked and not (self.rebuilding and marked[me])):
            raise RebuildRequired(f"{me}: its database was replaced by an empty or restored one")

    # -- deciding each record's fate --------------------------------------------------

    def _behind(self, fresh: Sequence[Record], known: dict[tuple[str, int], inbox.Position]) -> set[int]:
        """The records (their ``id()``) read from the broker before: below their partition's position,
        on the same incarnation of the topic (engine.store.inbox). ``StartedOver`` when a partition's
        position was recorded on a topic since made again; ``Unverified`` when a record below its
        position was fetched after its topic's id was last read (the topic may be new since)."""
        ids = self.topics.ids
        started_over = {
            (r.topic, r.partition): ids[r.topic] for r in fresh if inbox.void(known.get((r.topic, r.partition)),
                                                                             ids.get(r.topic))
        }  # fmt: skip
        if started_over:
            raise StartedOver(started_over)
        below = [r for r in fresh if (at := known.get((r.topic, r.partition))) is not None and r.offset < at[0]]
        unverified = {r.topic for r in below if not self.topics.verified(r.topic)}
        if unverified:
            raise Unverified(unverified)
        return {id(r) for r in below}

    def restart_positions(self, starts: Mapping[tuple[str, int], tuple[str, int]]) -> None:
        """Partitions of a topic made again: their positions start over at ``starts`` ((topic,
        partition) → (the topic's new id, the offset its records begin at)); engine.worker.loop has
        moved the consumer group there first."""
        with self.engine.begin() as conn:
            self.inbox.restart(conn, starts)

    def _decode(self, record: Record) -> _Item:
        unreadable = unreadable_reason(record.headers)
        if unreadable is not None:
            return _Item(record, "reject", reason=f"unreadable: {unreadable}")
        try:
            envelope = decode_envelope(record.value)
            if envelope.type not in self.participant.handlers:
                known = self.types.get(envelope.type)
                if known is None:
                    return _Item(record, "reject", reason=f"unknown_type: {envelope.type!r} is no event of the saga")
                if known.topic != record.topic:
                    return _Item(record, "reject", reason=f"wrong_topic: {envelope.type} belongs on {known.topic}")
                return _Item(record, "skip")  # another participant on this topic handles it
            return _Item(record, "apply", envelope, decode_event(envelope, self.types))
        except BadRecord as bad:
            return _Item(record, "reject", reason=bad.reason)

    def _plan(self, conn: Connection, items: list[_Item]) -> list[_Item]:
        """Turn ``apply`` into ``duplicate`` or ``reject`` where the inbox says so, in batch order."""
        envelopes = [item.envelope for item in items if item.envelope is not None]
        seen: dict[str, tuple[str, str]] = {}  # event id -> (saga id, type), applied or parked
        started: dict[tuple[str, str], str] = {}  # (saga id, type) -> event id
        parked_sagas: set[str] = set()  # sagas with a record parked: later ones wait behind it
        unparking = {item.envelope.id for item in items if item.envelope and isinstance(item.record, ParkedRecord)}
        if envelopes:
            # the batch's recorded decisions, in one read
            self.history.prefetch(history_key(e.sagaid, e.id) for e in envelopes)
            found = self.inbox.applied(conn, (e.id for e in envelopes), (e.sagaid for e in envelopes))
            held = [event_id for event_id, _, type_ in found if type_ == inbox.PARKED and event_id not in unparking]
            held_types = self.parked.types(conn, held) if held else {}
            for event_id, saga_id, type_ in found:
                if type_ == inbox.PARKED:
                    if event_id in unparking:
                        continue
                    parked_sagas.add(saga_id)  # a record parked is at the head of its saga's queue
                    type_ = held_types.get(event_id, type_)  # as good as applied: a copy is refused
                seen[event_id] = (saga_id, type_)
                if type_ != inbox.DEAD_LETTER:
                    started[(saga_id, type_)] = event_id
        planned = []
        for item in items:
            envelope = item.envelope
            if item.action == "apply" and envelope is not None:
                this = (envelope.sagaid, envelope.type)
                before = seen.get(envelope.id)
                if before == this:
                    item = _Item(item.record, "duplicate")
                elif before is not None:
                    item = _reject(
                        item, "event_id_reused",
                        f"event id {envelope.id!r} was applied for saga {before[0]!r} ({before[1]}); "
                        f"this record is for saga {envelope.sagaid!r}",
                    )  # fmt: skip
                elif started.get(this, envelope.id) != envelope.id and _same_event(envelope, started[this]):
                    item = _Item(item.record, "duplicate")  # published again across an upgrade of the ids
                elif started.get(this, envelope.id) != envelope.id:
                    item = _reject(
                        item, "conflicting_copy",
                        f"saga {envelope.sagaid!r} already had its {envelope.type}, event id {started[this]!r}; "
                        f"this copy has id {envelope.id!r}",
                    )  # fmt: skip
                elif not isinstance(item.record, ParkedRecord) and (
                    envelope.sagaid in parked_sagas or (self.rebuilding and not self._recorded(envelope))
                ):
                    reason = WAITING if envelope.sagaid in parked_sagas else REBUILDING
                    item = _Item(item.record, "park", envelope, item.event, reason=reason)
                    parked_sagas.add(envelope.sagaid)
                    seen[envelope.id] = this
                    started[this] = envelope.id
                else:
                    seen[envelope.id] = this
                    started[this] = envelope.id
            planned.append(item)
        return self._already_dead(conn, planned)

    def _already_dead(self, conn: Connection, items: list[_Item]) -> list[_Item]:
        """A rejected record already dead-lettered (a replay) is a duplicate, not a second dead letter."""
        markers = {item.marker for item in items if item.action == "reject"}
        if not markers:
            return items
        dead = {event_id for event_id, _, type_ in self.inbox.applied(conn, markers) if type_ == inbox.DEAD_LETTER}
        return [_Item(i.record, "duplicate") if i.action == "reject" and i.marker in dead else i for i in items]

    # -- doing it -----------------------------------------------------------------------

    def _do(self, p: _Pass, item: _Item) -> None:
        if item.action == "apply" and item.envelope is not None and item.envelope.sagaid in p.blocked:
            # An earlier record of its saga was just parked to be retried: this one waits behind it.
            if isinstance(item.record, ParkedRecord):
                p.kept.add(item.record.id)
                return
            item = _Item(item.record, "park", item.envelope, item.event, reason=WAITING)
        if item.action == "skip":
            p.result.skipped += 1
        elif item.action == "duplicate":
            p.result.duplicates += 1
        elif item.action == "reject":
            self._dead_letter(p, item, item.reason)
        elif item.action == "park":
            self._park(p, item)
        elif p.careful:
            self._apply_carefully(p, item)
        else:
            self._apply_optimistically(p, item)

    def _apply_optimistically(self, p: _Pass, item: _Item) -> None:
        envelope, event = item.envelope, item.event
        assert envelope is not None and event is not None
        with self._span(item) as context:
            try:
                produced = self._decide(p, item, self._once)
                rows = self._rows(envelope, produced, context())
            except DeferredFailed as held:  # an earlier record's insert, sent now: whose is not known
                if is_unavailable(held.error):
                    raise held.error from None
                raise Careful(None, held.error) from None
            except Exception as exc:  # Rejected too: what the handler wrote must roll back with it
                if is_unavailable(exc):
                    raise
                raise Careful(envelope.id, exc) from None
        p.inbox.append(self._inbox_row(item, envelope.type, envelope.sagaid))
        p.rows.extend(rows)
        self._applied(p.result, envelope, event, produced)

    def _apply_carefully(self, p: _Pass, item: _Item) -> None:
        envelope, event = item.envelope, item.event
        assert envelope is not None and event is not None
        with self._span(item) as context:
            try:
                with p.conn.begin_nested():
                    produced = self._decide(p, item, self._attempt)
                    self._write(p, item, envelope, self._rows(envelope, produced, context()))
            except Rejected as rejected:
                self._dead_letter(p, item, rejected.reason)
                return
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                gave_up = exc if isinstance(exc, _GaveUp) else self._retry_later(p, item, exc, context())
                if gave_up is not None:
                    self._fail(p, item, gave_up, context())
                return
        self._applied(p.result, envelope, event, produced)

    def _retry_later(self, p: _Pass, item: _Item, error: Exception, context: list[list[str]]) -> _GaveUp | None:
        """Park ``item`` (or put its parked row off) to be tried again when the policy says, and
        say so on the retry notices' topic; None. A ``_GaveUp`` when it is not to be tried again."""
        envelope = item.envelope
        assert envelope is not None
        attempts = (item.record.attempts if isinstance(item.record, ParkedRecord) else 0) + 1
        if isinstance(error, TooLarge):
            return _gave_up(error, attempts)
        if self.participant.compensator and self._invalid_output(error):
            return _gave_up(error, attempts)  # the same data fails the same way every time
        retryable = self.policy.retryable(error)
        delay = self.policy.delay_after(attempts) if retryable else None
        if delay is None:
            return _gave_up(error, attempts, retryable)
        now = time.time()
        due_at = now + delay
        deadline = self._deadline(envelope)
        if deadline is not None:
            if deadline <= now:
                return _GaveUp("deadline_exceeded", f"{_describe(error)}; the saga's deadline passed")
            due_at = min(due_at, deadline)  # tried once more at the deadline, which then fails it
        described = _describe(error)
        name = self.participant.name
        log.info("%s: %s on %s (saga %s), attempt %d; next at +%.2fs", name, described, envelope.id,
                 envelope.sagaid, attempts, due_at - now)  # fmt: skip
        with p.conn.begin_nested():
            if isinstance(item.record, ParkedRecord):
                self.parked.retry_later(p.conn, item.record.id, attempts, due_at, described)
                p.kept.add(item.record.id)
            else:
                row = self.parked.row(item.record, envelope, RETRYING, attempts, due_at, described)
                self.parked.insert(p.conn, [row])
                p.result.parked += 1
            if self.participant.retries_topic:
                notice = retrynotice.notice(
                    envelope, participant=name, source=self.participant.source, attempt=attempts,
                    maximum_attempts=self.policy.maximum_attempts, next_attempt_at=due_at, error=described,
                )  # fmt: skip
                self._insert_outbox(p, [event_row(name, notice, self.participant.retries_topic, context)])
        p.blocked.add(envelope.sagaid)
        p.result.retries.append(type(error).__name__)
        p.result.next_due = min(p.result.next_due or due_at, due_at)
        return None

    def _invalid_output(self, error: Exception) -> bool:
        """``error`` says an event of the saga the handler made is invalid: what it would publish."""
        return isinstance(error, ValidationError) and error.title in self.types

    def _deadline(self, envelope: Envelope) -> float | None:
        """The saga's deadline (epoch seconds) for a forward step; None for a compensation, for a
        record with a recorded decision (a rebuild re-applies what was decided in time), or none set."""
        if self.participant.compensator or envelope.sagadeadline is None or self._recorded(envelope):
            return None
        deadline = envelope.sagadeadline
        if deadline.tzinfo is None:  # a client's time without an offset: UTC, as CloudEvents' time
            deadline = deadline.replace(tzinfo=UTC)
        return deadline.timestamp()

    def _fail(self, p: _Pass, item: _Item, gave_up: _GaveUp, context: list[list[str]]) -> None:
        """The record's failure path: a step's failure event, else (or if that fails) a dead letter."""
        envelope, event = item.envelope, item.event
        assert envelope is not None and event is not None
        name, on_exhausted = self.participant.name, self.participant.on_exhausted
        recorded = self._recorded(envelope)
        if recorded:
            # Rebuilding, a recorded decision could not be applied again: publishing a new one
            # would give the saga a second outcome. The record waits for a person, loudly.
            published = ", ".join(e.type for e in recorded)
            log.error("%s: REBUILD CONFLICT for saga %s: it published %s before, and applying that again "
                      "failed (%s)", name, envelope.sagaid, published, gave_up.detail)  # fmt: skip
            self._dead_letter(p, item, f"rebuild_conflict: {gave_up.detail}")
            return
        if on_exhausted is None:  # a compensation: nothing to fall back on but a person
            reason = f"compensation_failed: {gave_up.detail}"
            self._dead_letter(p, item, reason, gave_up.attempts)
            p.result.operator[envelope.sagaid] = (reason, dead_letters(item.record.topic))
            return
        log.warning("%s: saga %s step failed (%s): %s", name, envelope.sagaid, gave_up.reason, gave_up.detail)
        try:
            with p.conn.begin_nested():  # the step's own record of the failure, beside its failure event
                failure = on_exhausted(event, self._unit_of_work(p, envelope), gave_up.reason, gave_up.detail)
                self._write(p, item, envelope, self._rows(envelope, [failure], context))
        except Exception as exc:
            if is_unavailable(exc):
                raise
            self._dead_letter(p, item, f"failure_path_failed: {gave_up.reason}, then {_describe(exc)}")
            return
        self._applied(p.result, envelope, event, [failure])

    def _span(self, item: _Item) -> Any:
        """The span of applying ``item``; it yields what gives the context headers of what it publishes."""
        record = item.record
        assert item.envelope is not None
        return tracing.step(
            self.participant.name, item.envelope, record.topic, record.partition, record.offset, record.headers
        )

    def _decide(self, p: _Pass, item: _Item, attempt: Any) -> Sequence[Event]:
        """The events the handler publishes for ``item``: a recorded give-up first (rebuild), else ``attempt``."""
        envelope, event = item.envelope, item.event
        assert envelope is not None and event is not None
        uow = self._unit_of_work(p, envelope)
        gave_up = next((e for e in uow.recorded if isinstance(e, FailureEvent) and e.reason in GAVE_UP), None)
        if gave_up is not None and self.participant.on_exhausted is not None:
            # The first time round this step gave up: give up again, with the same words.
            return [self.participant.on_exhausted(event, uow, gave_up.reason, gave_up.detail)]
        deadline = self._deadline(envelope)
        if deadline is not None and self.participant.on_exhausted is not None and time.time() >= deadline:
            detail = f"the saga's deadline {envelope.sagadeadline.isoformat()} had passed"  # type: ignore[union-attr]
            return [self.participant.on_exhausted(event, uow, "deadline_exceeded", detail)]
        return attempt(p, envelope, event, uow)

    def _once(self, p: _Pass, envelope: Envelope, event: Event, uow: UnitOfWork[Any]) -> Sequence[Event]:
        self.faults.maybe_fail(envelope.sagaid)
        return self.participant.handlers[envelope.type](event, uow)

    def _attempt(self, p: _Pass, envelope: Envelope, event: Event, uow: UnitOfWork[Any]) -> Sequence[Event]:
        """One try of the handler, in a savepoint; the optimistic pass's try stands for it if it
        failed there (it is not run twice for one attempt)."""
        prior = p.failed.pop(envelope.id, None)
        if prior is not None:
            raise prior
        with p.conn.begin_nested():
            return self._once(p, envelope, event, uow)

    def _unit_of_work(self, p: _Pass, envelope: Envelope) -> UnitOfWork[Any]:
        recorded = tuple(decode_event(e, self.types) for e in self._recorded(envelope))
        return UnitOfWork(envelope.sagaid, envelope.id, p.repo, self.settings, recorded)

    def _recorded(self, cause: Envelope) -> list[Envelope]:
        """What this participant published for ``cause`` before (rebuilding): its recorded decision."""
        return [e for e in self.history.get(history_key(cause.sagaid, cause.id), ()) if e.sagaid == cause.sagaid]

    def _rows(self, cause: Envelope, produced: Sequence[Event], context: list[list[str]]) -> list[dict[str, Any]]:
        """The outbox rows of what ``cause`` produced; ``TooLarge`` before anything is committed."""
        rows = []
        on_the_topics = {e.id for e in self._recorded(cause)}  # a recorded decision is published already
        for event in produced:
            envelope = wrap(
                event, saga_id=cause.sagaid, source=self.participant.source, causation_id=cause.id,
                deadline=cause.sagadeadline,
            )  # fmt: skip
            if on_the_topics.intersection(caused_ids(cause.sagaid, cause.id, envelope.type)):
                continue  # recorded under this id, or under the one derived before the saga id was in it
            row = event_row(self.participant.name, envelope, type(event).topic, context)
            size = len(row["value"]) + len(row["key"]) + headers_size(row["headers"]) + RECORD_OVERHEAD
            if size > self.settings.max_message_bytes:
                raise TooLarge(f"{envelope.type} would be {size} bytes; the limit is {self.settings.max_message_bytes}")
            rows.append(row)
        return rows

    def _write(self, p: _Pass, item: _Item, envelope: Envelope, rows: list[dict[str, Any]]) -> None:
        """Careful pass: the record's inbox row and outbox rows, now, in its savepoint."""
        self.inbox.insert(p.conn, [self._inbox_row(item, envelope.type, envelope.sagaid)])
        self._insert_outbox(p, rows)

    def _insert_outbox(self, p: _Pass, rows: list[dict[str, Any]]) -> None:
        p.result.outbox.extend(self.outbox.insert(p.conn, rows))

    def _flush(self, p: _Pass) -> None:
        """Optimistic pass: the handlers' held inserts, then every inbox and outbox row of the batch,
        one statement per table."""
        try:
            if p.held is not None:
                p.held.flush()
            self.inbox.insert(p.conn, p.inbox)
            self.parked.insert(p.conn, p.parked)
            self._insert_outbox(p, p.rows)
        except Exception as exc:
            error = exc.error if isinstance(exc, DeferredFailed) else exc
            if is_unavailable(error):
                raise error from None
            raise Careful(None, error) from None

    def _park(self, p: _Pass, item: _Item) -> None:
        assert item.envelope is not None
        row = self.parked.row(item.record, item.envelope, item.reason or REBUILDING)
        if p.careful:
            with p.conn.begin_nested():
                self.parked.insert(p.conn, [row])
        else:
            p.parked.append(row)
        p.result.parked += 1

    def _dead_letter(self, p: _Pass, item: _Item, reason: str, attempts: int | None = None) -> None:
        """``item``'s dead letter, in the outbox. A record refused at the door is also marked in the
        inbox by its coordinates, so a replay of the topic does not dead-letter it twice; a record
        that failed while being applied is not: replaying it (after a fix) applies it."""
        record = item.record
        log.warning(
            "%s: dead letter from %s[%d]@%d: %s",
            self.participant.name, record.topic, record.partition, record.offset, printable(reason, 300),
        )  # fmt: skip
        row = dead_letter_row(self.participant.name, record, reason, self.settings.max_message_bytes, attempts)
        marker = (
            [self._inbox_row(item, "dead_letter", printable(_key_of(record), 200))] if item.action == "reject" else []
        )
        if p.careful:
            with p.conn.begin_nested():
                self.inbox.insert(p.conn, marker)
                self._insert_outbox(p, [row])
        else:
            p.inbox.extend(marker)
            p.rows.append(row)
        p.result.dead_letters.append(reason)

    def _applied(self, result: BatchResult, envelope: Envelope, consumed: Event, produced: Sequence[Event]) -> None:
        result.applied[envelope.type] = result.applied.get(envelope.type, 0) + 1
        for out in produced:
            if not isinstance(out, FailureEvent):
                continue
            if self.participant.compensator and isinstance(consumed, FailureEvent):
                result.compensations.append(len(out.undone) > len(consumed.undone))
            elif not self.participant.compensator:
                result.failures.append(out.reason)

    def _inbox_row(self, item: _Item, type_: str, saga_id: str) -> dict[str, Any]:
        key = item.marker if type_ == inbox.DEAD_LETTER else item.envelope.id  # type: ignore[union-attr]
        return self.inbox.row(key, saga_id, type_)

    # -- housekeeping ---------------------------------------------------------------------

    def prune_inbox(self, older_than_hours: float) -> int:
        """Forget events applied more than ``older_than_hours`` ago (see inbox_retention_hours)."""
        return self.inbox.prune(self.engine, older_than_hours)

    def pending(self) -> list[OutboxRow]:
        """Unsent outbox rows of this participant, oldest first (flushed at start-up)."""
        return self.outbox.pending(self.engine)

    def mark_sent(self, ids: Sequence[int]) -> None:
        """A published row has no further use: marking it sent deletes it."""
        self.outbox.mark_sent(self.engine, ids)


def _database_file(engine: Engine) -> tuple[str, int, int] | None:
    """SQLite: (path, device, inode) of the database file, (path, 0, 0) when it is gone; else None."""
    if engine.url.get_backend_name() != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    path = str(engine.url.database)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return (path, 0, 0)
    return (path, found.st_dev, found.st_ino)


def _same_event(envelope: Envelope, other_id: str) -> bool:
    """Are ``envelope`` and the event of id ``other_id`` (same saga, same type) one event, its id
    derived from the same cause once with the saga id and once the way it was before?"""
    cause = envelope.causationid
    return cause is not None and {envelope.id, other_id} == set(caused_ids(envelope.sagaid, cause, envelope.type))


def _reject(item: _Item, kind: str, detail: str) -> _Item:
    return _Item(item.record, "reject", reason=f"{kind}: {detail}")


def _gave_up(error: Exception, attempts: int | None, retryable: bool = False) -> _GaveUp:
    if isinstance(error, TooLarge):
        return _GaveUp("event_too_large", str(error), attempts)
    tried = f" after {attempts} attempt{'s' * (attempts > 1)}" if attempts else ""
    return _GaveUp("retries_exhausted" if retryable else "non_retryable_error", f"{_describe(error)}{tried}", attempts)


def _key_of(record: Record) -> str:
    return (record.key or b"")[:800].decode("utf-8", "replace")


def _describe(error: BaseException) -> str:
    if isinstance(error, ValidationError) and error.error_count():
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        said = f"{error.title}: {where}: {first['msg']}"
        return f"ValidationError: {printable(said, 300)}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {printable(text[0], 300)}" if text else type(error).__name__
