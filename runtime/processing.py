"""Steps 1 and 2 of the participant loop: validate a batch and apply it in one transaction.

For each record: a record that cannot be parsed goes to the dead-letter outbox row with
its reason; an event type this participant does not handle is skipped and counted; an
event id already in the inbox is a duplicate and changes nothing; anything else writes
its inbox row, lets the handler change the service's state and writes the events it
returns to the outbox — all in the batch's one local transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, delete, select
from sqlalchemy.exc import InterfaceError, OperationalError

from contracts import topics
from contracts.envelope import Envelope, wrap
from contracts.events import EVENT_TYPES, Event, Failure
from runtime import tracing
from runtime.codec import BadRecord, decode_envelope, decode_event
from runtime.db import messaging_tables
from runtime.history import History
from runtime.participant import Participant, UnitOfWork
from runtime.retry import FaultInjector
from runtime.settings import Settings

log = logging.getLogger(__name__)

GAVE_UP = ("retries_exhausted", "non_retryable_error")

REASON_HEADER = "pokesaga.dlq.reason"


class Record(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str]]
    type: str


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


@dataclass(frozen=True)
class _Item:
    """A record, decoded: ``key`` is its event id or dead-letter marker; None: skipped."""

    record: Record
    key: str | None
    envelope: Envelope | None = None
    event: Event | None = None
    bad: str | None = None


class _Careful(Exception):
    """A handler raised in an optimistic batch: apply it again, record by record."""

    def __init__(self, event_id: str, error: Exception) -> None:
        super().__init__(event_id)
        self.event_id = event_id
        self.error = error


def _key_of(record: Record) -> str:
    return (record.key or b"").decode("utf-8", "replace")[:200]


class Interrupted(Exception):
    """A stop was requested while a record waited to be retried: the batch is abandoned, uncommitted."""


def event_row(participant: Participant, envelope: Envelope, trace_headers: Sequence[list[str]] = ()) -> dict[str, Any]:
    return {
        "producer": participant.name,
        "event_id": envelope.id,
        "topic": EVENT_TYPES[envelope.type].topic,
        "key": envelope.sagaid.encode(),
        "value": envelope.to_json(),
        "headers": [["ce_type", envelope.type], *trace_headers],
    }


def dead_letter_row(participant: Participant, record: Record, reason: str) -> dict[str, Any]:
    headers = [[k, v.decode("utf-8", "replace")] for k, v in record.headers or ()]
    headers += [
        [REASON_HEADER, reason[:1000]],
        ["pokesaga.dlq.topic", record.topic],
        ["pokesaga.dlq.partition", str(record.partition)],
        ["pokesaga.dlq.offset", str(record.offset)],
        ["pokesaga.dlq.consumer", participant.name],
    ]
    return {
        "producer": participant.name,
        "event_id": None,
        "topic": topics.dead_letters(record.topic),
        "key": record.key,
        "value": record.value if record.value is not None else b"",
        "headers": headers,
    }


class BatchProcessor:
    """Applies batches of records for one participant against its database."""

    def __init__(
        self, participant: Participant, engine: Engine, settings: Settings, history: History | None = None
    ) -> None:
        self.participant = participant
        self.history = history or {}
        self.engine = engine
        self.settings = settings
        self.inbox, self.outbox = messaging_tables(participant.metadata)
        self.policy = settings.retry_policy(participant.name, participant.compensator)
        self.faults = FaultInjector(settings.faults, participant.name)
        self.stopping = threading.Event()
        self._seen_query = select(self.inbox.c.event_id).where(
            self.inbox.c.consumer == bindparam("consumer"), self.inbox.c.event_id.in_(bindparam("keys", expanding=True))
        )

    def process(self, records: Sequence[Record]) -> BatchResult:
        """One local transaction for the whole batch: inbox rows + state + outbox rows.

        Optimistic first: no savepoints. If a handler raises, the whole transaction is
        rolled back and the batch is applied again record by record, each attempt in a
        savepoint under the retry policy.
        """
        try:
            return self._process(records, careful=False)
        except _Careful as first:
            # That attempt happened (and was rolled back): it counts against the policy.
            return self._process(records, careful=True, failed={first.event_id: first.error})

    def _process(
        self, records: Sequence[Record], careful: bool, failed: dict[str, Exception] | None = None
    ) -> BatchResult:
        result = BatchResult()
        rows: list[dict[str, Any]] = []
        inbox_rows: list[dict[str, Any]] = []
        items = [self._decode(record) for record in records]
        with self.engine.begin() as conn:
            seen = self._seen(conn, [item.key for item in items if item.key])
            repo = self.participant.repository(conn)
            for item in items:
                if item.key is None:
                    result.skipped += 1
                    continue
                if item.key in seen:
                    result.duplicates += 1
                    continue
                seen.add(item.key)
                if item.bad is not None:
                    # Recorded by its coordinates: replaying the topic does not dead-letter it twice.
                    inbox_rows.append(self._inbox_row(item.key, item.record, "dead_letter", _key_of(item.record)))
                    self._dead_letter(item.record, item.bad, rows, result)
                    continue
                assert item.envelope is not None and item.event is not None
                prior = (failed or {}).get(item.key)
                record = item.record
                with tracing.step(
                    self.participant.name, item.envelope, record.topic, record.partition, record.offset, record.headers
                ) as context_headers:
                    produced = self._attempt(
                        conn, repo, record, item.envelope, item.event, rows, result, careful, prior
                    )
                    context = context_headers()  # what it publishes continues this trace
                if produced is None:
                    continue  # parked as a dead letter: not in the inbox, so a replay applies it
                inbox_rows.append(self._inbox_row(item.key, record, item.envelope.type, item.envelope.sagaid))
                rows.extend(event_row(self.participant, self._wrap(item.envelope, out), context) for out in produced)
                result.applied[item.envelope.type] = result.applied.get(item.envelope.type, 0) + 1
                self._account(item.event, produced, result)
            if inbox_rows:
                conn.execute(self.inbox.insert(), inbox_rows)
            if rows:
                ids = conn.execute(
                    self.outbox.insert().returning(self.outbox.c.id, sort_by_parameter_order=True), rows
                ).scalars()
                result.outbox = [_to_outbox_row(i, r) for i, r in zip(ids, rows, strict=True)]
        return result

    def _decode(self, record: Record) -> _Item:
        try:
            envelope = decode_envelope(record.value)
            if envelope.type not in self.participant.handlers:
                return _Item(record, None)  # skipped and counted
            return _Item(record, envelope.id, envelope=envelope, event=decode_event(envelope))
        except BadRecord as bad:
            return _Item(record, f"dead:{record.topic}:{record.partition}:{record.offset}", bad=bad.reason)

    def _attempt(
        self,
        conn: Connection,
        repo: Any,
        record: Record,
        envelope: Envelope,
        event: Event,
        rows: list[dict[str, Any]],
        result: BatchResult,
        careful: bool,
        prior: Exception | None = None,
    ) -> Sequence[Event] | None:
        """Run the handler; when ``careful``, under the retry policy, each attempt in a savepoint.

        Returns the events to publish, or None when the record was dead-lettered.
        """
        recorded = tuple(decode_event(e) for e in self.history.get(envelope.id, ()))
        uow = UnitOfWork(envelope.sagaid, envelope.id, repo, self.settings, recorded)
        gave_up = next((e for e in recorded if isinstance(e, Failure) and e.reason in GAVE_UP), None)
        if gave_up is not None and self.participant.on_exhausted is not None:
            # The first time round this step gave up: give up again, with the same words.
            return [self.participant.on_exhausted(event, uow, gave_up.reason, gave_up.detail)]
        if not careful:
            try:
                self.faults.maybe_fail()
                return self.participant.handlers[envelope.type](event, uow)
            except (OperationalError, InterfaceError):
                raise  # the database itself is unavailable: the whole batch is retried
            except Exception as exc:
                raise _Careful(envelope.id, exc) from None
        delays = self.policy.delays()
        attempts = 0
        while True:
            attempts += 1
            if prior is not None:  # the optimistic pass's attempt
                error, prior = prior, None
            else:
                try:
                    with conn.begin_nested():
                        self.faults.maybe_fail()
                        return self.participant.handlers[envelope.type](event, uow)
                except (OperationalError, InterfaceError):
                    raise  # the database itself is unavailable: the whole batch is retried
                except Exception as exc:
                    error = exc
            retryable = self.policy.retryable(error)
            delay = next(delays, None) if retryable else None
            if delay is None:
                break
            result.retries.append(type(error).__name__)
            log.info("%s: %s on %s, retry in %.2fs", self.participant.name, _describe(error), envelope.id, delay)
            if self.stopping.wait(delay):
                raise Interrupted
        detail = f"{_describe(error)} after {attempts} attempt{'s' * (attempts > 1)}"
        reason = "retries_exhausted" if retryable else "non_retryable_error"
        if self.participant.on_exhausted is None:
            log.error(
                "%s: COMPENSATION CANNOT PROCEED for saga %s (%s): record parked in %s; the saga is stuck "
                "in compensation until it is replayed",
                self.participant.name, envelope.sagaid, detail, topics.dead_letters(record.topic),
            )  # fmt: skip
            self._dead_letter(record, f"compensation_failed: {detail}", rows, result)
            return None
        log.warning("%s: saga %s step failed (%s): %s", self.participant.name, envelope.sagaid, reason, detail)
        with conn.begin_nested():  # the step's own record of the failure, beside its failure event
            return [self.participant.on_exhausted(event, uow, reason, detail)]

    def _wrap(self, cause: Envelope, event: Event) -> Envelope:
        return wrap(event, saga_id=cause.sagaid, source=self.participant.source, causation_id=cause.id)

    def _account(self, consumed: Event, produced: Sequence[Event], result: BatchResult) -> None:
        for out in produced:
            if not isinstance(out, Failure):
                continue
            if self.participant.compensator and isinstance(consumed, Failure):
                result.compensations.append(len(out.undone) > len(consumed.undone))
            elif not self.participant.compensator:
                result.failures.append(out.reason)

    def _seen(self, conn: Connection, keys: list[str]) -> set[str]:
        """Which of ``keys`` (event ids, dead-letter markers) this participant has applied."""
        if not keys:
            return set()
        params = {"consumer": self.participant.name, "keys": keys}
        return set(conn.execute(self._seen_query, params).scalars())

    def _inbox_row(self, key: str, record: Record, type_: str, saga_id: str) -> dict[str, Any]:
        return {
            "consumer": self.participant.name,
            "event_id": key,
            "saga_id": saga_id,
            "type": type_,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "received_at": time.time(),
        }

    def _dead_letter(self, record: Record, reason: str, rows: list[dict[str, Any]], result: BatchResult) -> None:
        log.warning(
            "%s: dead letter from %s[%d]@%d: %s",
            self.participant.name, record.topic, record.partition, record.offset, reason,
        )  # fmt: skip
        rows.append(dead_letter_row(self.participant, record, reason))
        result.dead_letters.append(reason)

    def prune_inbox(self, older_than_hours: float) -> int:
        """Forget events applied more than ``older_than_hours`` ago (see inbox_retention_hours)."""
        cutoff = time.time() - older_than_hours * 3600
        with self.engine.begin() as conn:
            inbox = self.inbox
            query = delete(inbox).where(inbox.c.consumer == self.participant.name, inbox.c.received_at < cutoff)
            return conn.execute(query).rowcount or 0

    def pending(self) -> list[OutboxRow]:
        """Unsent outbox rows of this participant, oldest first (flushed at start-up)."""
        with self.engine.connect() as conn:
            query = select(self.outbox).where(self.outbox.c.producer == self.participant.name)
            return [_to_outbox_row(r.id, r._asdict()) for r in conn.execute(query.order_by(self.outbox.c.id))]

    def mark_sent(self, ids: Sequence[int]) -> None:
        """A published row has no further use: marking it sent deletes it."""
        with self.engine.begin() as conn:
            conn.execute(delete(self.outbox).where(self.outbox.c.id.in_(list(ids))))


def _to_outbox_row(row_id: int, row: dict[str, Any]) -> OutboxRow:
    headers = [(str(k), str(v)) for k, v in row["headers"]]
    type_ = next((v for k, v in headers if k == "ce_type"), "dead_letter")
    return OutboxRow(row_id, row["topic"], row["key"], row["value"], headers, type_)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
