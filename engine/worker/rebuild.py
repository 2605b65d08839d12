"""Rebuilding a participant's state from the topics, as a durable state of its database.

When a service's database is lost, replaying its input topics rebuilds the state, but the
order in which partitions interleave may differ from the first time, and a decision that
depends on state shared across sagas (a stock, a capacity) could come out otherwise. So a
rebuilding participant first loads what it published before (its **history**), indexed by the
id of the event that caused it, and a handler with a recorded decision takes that decision
again instead of deciding anew: the rebuilt state and the re-published events are the same.
The history is kept on disk, not in memory: however much the topics hold, a rebuild holds a
bounded part of it in memory, the batches in hand (engine.worker.history).

**When.** A participant is rebuilding while its service's database has a row for it in the
``rebuild`` table: from the moment its state is lost or restored to the moment it has re-applied
its recorded history. The row is written where the loss is seen, so no way of starting misses it:

- a database created empty (by a service's start or ``pokesaga db upgrade``) gets a ``'*'`` row
  in the transaction that creates its tables; the first process to start expands it into one
  row per participant of the service and rewinds their consumer groups to the earliest records;
- ``pokesaga replay`` (after a restore from a backup, or a loss) writes the rows of what it
  replays, with where each group re-reads from (``start``), before it moves the offsets: a replay
  interrupted in between is finished by the service, which moves its group there itself. It never
  re-reads from after the first record the database had not applied (``restore_start``);
- a database replaced under a running service (its tables gone, a SQLite file restored in place)
  makes the participant leave its group and start again, as if restarted (engine.worker.run).

Each row holds **targets**: the end of every input partition when the rebuild began. Every
record before them that has a recorded decision is re-applied; a record without one — one that
queued during the outage — is **parked** (engine.store.parked), and so is every later record of its
saga. When a participant's group has committed past its targets, its row is marked replayed. A
compensator starts only once its step has replayed (a compensation replayed before the step it
undoes would find nothing to undo); the step waits for its compensator in turn. When every
participant of the service has replayed, the rows are deleted in one transaction and the
participants apply the parked records, in arrival order, on the rebuilt state: the state before
the loss plus the queued sagas' effects, whatever the partition interleaving, and every saga keeps
exactly one outcome. What it publishes again for a recorded decision is not re-sent (it is on the
topics already); a recorded decision that cannot be applied again is a dead letter
(``rebuild_conflict``), never a second outcome. Instances share the rows, so a second
instance, a restart or a crash in the middle of a rebuild carries it on from where it is.

Any client can write anything to the topics: a record that is not an envelope the services
take (any bytes, JSON nested thousands of levels deep, a record the client cannot read as
written) is skipped, and the count of them logged; it never stops a rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import Connection, Engine, MetaData, Table, delete, insert, select, text, update

from engine.broker import kafka
from engine.broker.unreadable import unreadable_reason
from engine.events import Event
from engine.ops import offsets
from engine.participant import Participant
from engine.saga import Service
from engine.store.db import rebuild_tables
from engine.wire.codec import BadRecord, decode_envelope, decode_event
from engine.wire.envelope import Envelope, is_caused_id
from engine.worker.history import CACHE, History
from engine.worker.history import key as history_key

log = logging.getLogger(__name__)

CREATED = "*"  # the row of a database created empty: every participant of the service rebuilds
Targets = dict[str, int]  # "topic:partition" -> end offset when the rebuild began


Start = dict[str, int]  # "topic:partition" -> the offset the group re-reads from


class RebuildRequired(Exception):
    """The participant's database was lost or replaced while it ran (its tables are gone, or it
    is marked for a new rebuild): nothing is applied; the participant must start its rebuild."""


def mark_created(conn: Connection, service: Service) -> None:
    """In the transaction that created ``service``'s tables: whatever it did before is lost."""
    table, _ = rebuild_tables(service.metadata)
    conn.execute(insert(table).values(consumer=CREATED, targets=None, start=None, replayed=False, since=time.time()))


@dataclass(frozen=True)
class Row:
    consumer: str
    targets: Targets | None  # None: the group is not positioned yet
    start: Start | None  # where the group is positioned; None: the earliest records
    replayed: bool


class RebuildState:
    """A service's rebuild rows, in its database, for ``participants`` (every participant of the
    service, whichever of them this process runs)."""

    def __init__(self, engine: Engine, metadata: MetaData, participants: Sequence[str]) -> None:
        self.engine = engine
        self.table, _ = rebuild_tables(metadata)
        self.participants = list(participants)

    def rows(self) -> dict[str, Row]:
        with self.engine.connect() as conn:
            return {
                r.consumer: Row(r.consumer, r.targets, r.start, r.replayed) for r in conn.execute(select(self.table))
            }

    def expand(self) -> list[str]:
        """A database created empty: a row (not positioned yet) for every participant of the
        service that has none; the participants now rebuilding."""
        with self.engine.begin() as conn:
            self._lock(conn)  # two instances starting at once: one expands, the other sees it done
            present = {r.consumer for r in conn.execute(select(self.table.c.consumer))}
            if CREATED in present:
                missing = [p for p in self.participants if p not in present]
                if missing:
                    conn.execute(insert(self.table), [self._row(p, None) for p in missing])
                conn.execute(delete(self.table).where(self.table.c.consumer == CREATED))
                present |= set(missing)
        return [p for p in self.participants if p in present]

    def created(self) -> bool:
        """Was the database created empty, its participants' rows not written yet?"""
        with self.engine.connect() as conn:
            query = select(self.table.c.consumer).where(self.table.c.consumer == CREATED)
            return conn.execute(query).first() is not None

    def forget_created(self) -> bool:
        """Drop the mark of a database created empty (no rebuild wanted); whether there was one."""
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(self.table).where(self.table.c.consumer == CREATED)).rowcount)

    def begin(self, starts: dict[str, Start | None]) -> None:
        """These participants rebuild, their groups re-reading from ``starts`` (None: the earliest).
        The first process to start one of them moves its group there (``position``)."""
        with self.engine.begin() as conn:
            self._lock(conn)
            conn.execute(delete(self.table).where(self.table.c.consumer.in_(list(starts))))
            conn.execute(insert(self.table), [self._row(p, start) for p, start in starts.items()])

    def positioned(self, consumer: str, targets: Targets) -> bool:
        """The group is positioned; the rebuild's history ends at ``targets`` (the first to get here sets them)."""
        with self.engine.begin() as conn:
            query = update(self.table).where(self.table.c.consumer == consumer, self.table.c.targets.is_(None))
            return bool(conn.execute(query.values(targets=targets)).rowcount)

    @staticmethod
    def _row(consumer: str, start: Start | None) -> dict[str, object]:
        return {"consumer": consumer, "targets": None, "start": start, "replayed": False, "since": time.time()}

    def _lock(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":  # SQLite's write lock, taken at BEGIN, already does it
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"rebuild:{self.table.name}"})

    def replayed(self, consumer: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.consumer == consumer).values(replayed=True))

    def finish(self) -> bool:
        """Over (True) once no row is left; the last participant to replay deletes them all."""
        with self.engine.begin() as conn:
            rows = list(conn.execute(select(self.table.c.consumer, self.table.c.replayed)))
            if rows and all(replayed and consumer != CREATED for consumer, replayed in rows):
                conn.execute(delete(self.table))
                return True
            return not rows


def encode(ends: dict[TopicPartition, int]) -> Targets:
    return {f"{tp.topic}:{tp.partition}": offset for tp, offset in ends.items()}


def decode(targets: Targets) -> dict[TopicPartition, int]:
    found = {}
    for key, offset in targets.items():
        topic, _, partition = key.rpartition(":")
        found[TopicPartition(topic, int(partition))] = int(offset)
    return found


async def position(bootstrap: str, state: RebuildState, participant: Participant, stop: asyncio.Event) -> bool:
    """Move ``participant``'s group to where its rebuild re-reads from (the row's ``start``, else the
    earliest records) and record where its history ends; False if stopped first.

    Only an empty group can be moved: while it has live members (an instance that has not
    noticed the loss yet) this waits, unless another instance positions it first."""
    said = False
    while not stop.is_set():
        row = (await asyncio.to_thread(state.rows)).get(participant.name)
        if row is None or row.targets is not None:
            return True
        try:
            _, members = await kafka.group_state(bootstrap, participant.name)
            if not members:
                if row.start is None:
                    moves = await offsets.plan(bootstrap, [participant], earliest=True)
                else:
                    moves = [offsets.Move(participant.name, tp, None, at) for tp, at in decode(row.start).items()]
                await offsets.apply(bootstrap, moves)
                ends = await kafka.end_offsets(bootstrap, participant.topics)
                if await asyncio.to_thread(state.positioned, participant.name, encode(ends)):
                    where = row.start or "the earliest records"
                    log.info("%s: rebuilding: consumer group moved to %s", participant.name, where)
                    await _warn_if_truncated(bootstrap, participant, moves)
                continue
        except (offsets.GroupActive, KafkaError) as exc:  # a member joined meanwhile: look again
            log.info("%s: rebuilding: %s", participant.name, exc)
        if not said:
            log.warning("%s: rebuilding: waiting for the live members of its group to leave", participant.name)
            said = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return False


async def _warn_if_truncated(bootstrap: str, participant: Participant, moves: list[offsets.Move]) -> None:
    """Retention has deleted records a rebuild from the earliest would need: say so, loudly."""
    beginning = await kafka.beginning_offsets(bootstrap, [m.partition for m in moves])
    gone = {f"{tp.topic}[{tp.partition}]": at for tp, at in beginning.items() if at > 0}
    if gone and all(m.target <= beginning[m.partition] for m in moves):
        log.error(
            "%s: rebuilding: the topics no longer hold their first records (retention), up to %s: what they "
            "did is missing from the rebuilt state unless it was restored from a backup",
            participant.name, gone,
        )  # fmt: skip


def restore_start(conn: Connection, positions: Table, consumer: str) -> Start:
    """Where a database restored from a backup must re-read from: after the last record it had
    passed, partition by partition (applied, skipped or refused: its positions, engine.store.inbox)."""
    query = select(positions.c.topic, positions.c.partition, positions.c.offset).where(positions.c.consumer == consumer)
    return {f"{topic}:{partition}": int(offset) for topic, partition, offset in conn.execute(query)}


async def caught_up(consumer: AIOKafkaConsumer, targets: Targets) -> bool:
    """Has ``consumer``'s group committed up to ``targets`` (or has retention left nothing before them)?"""
    ends = decode(targets)
    beginning = await consumer.beginning_offsets(list(ends))
    for tp, end in ends.items():
        committed = await consumer.committed(tp)
        if max(committed or 0, beginning.get(tp, 0)) < end:
            return False
    return True


async def load(
    bootstrap: str,
    participants: list[Participant],
    topics: Iterable[str],
    types: Mapping[str, type[Event]],
    cache: int = CACHE,
) -> dict[str, History]:
    """For each participant (by name), the events it published, by cause id.

    One pass over every saga topic as it is now, however many participants are rebuilt;
    only their own events are parsed and kept: an event of the saga (``types``) with a valid
    body whose id derives from its cause, as a participant publishes it. The first copy of an
    event is the one consumers kept; a later one with the same id is ignored. Each history is
    kept on disk, ``cache`` bounding what it holds in memory (engine.worker.history); close it when done.
    """
    by_source = {p.source: p.name for p in participants}
    found = {p.name: History(cache) for p in participants}
    topics = list(topics)
    skipped = 0
    if participants:
        marks = tuple(source.encode() for source in by_source)
        async for record in kafka.scan_to_end(bootstrap, topics):
            value = record.value or b""
            if not any(mark in value for mark in marks):  # cheap: most records are other services'
                continue
            if unreadable_reason(record.headers) is not None:  # not as a service wrote it
                skipped += 1
                continue
            try:
                envelope = _published_by(value, by_source)
                if envelope is not None:
                    decode_event(envelope, types)
            except BadRecord:
                skipped += 1
                continue
            if envelope is None:
                continue
            if not envelope.causationid or not is_caused_id(envelope):
                skipped += 1  # not as a participant publishes an event
                continue
            own = types[envelope.type].topic  # where a participant publishes it, keyed with its saga
            if (own in topics and record.topic != own) or record.key != envelope.sagaid.encode():
                skipped += 1  # a client's copy elsewhere (a start topic anyone may write) is no decision
                continue
            # A re-publication is the same event: keyed by its id, its first copy is kept. Kept with
            # its saga: a record of another saga naming the same cause is none of this one's.
            at = history_key(envelope.sagaid, envelope.causationid)
            found[by_source[envelope.source]].add(at, envelope.id, value)
    if skipped:
        log.warning("rebuild: skipped %d records on the topics that are not events as the services write them", skipped)
    for name, history in found.items():
        history.loaded()
        log.info("%s: rebuilding: %d recorded decisions loaded from the topics", name, len(history))
    return found


def _published_by(value: bytes, sources: dict[str, str]) -> Envelope | None:
    """The envelope in ``value`` when one of ``sources`` published it, else None; BadRecord when
    ``value`` is no envelope at all (``decode_envelope`` is total: no other exception)."""
    envelope = decode_envelope(value)
    return envelope if envelope.source in sources else None


class Rebuild:
    """One participant's side of its service's rebuild, as its loop runs it."""

    CHECK_EVERY = 1.0  # seconds between two looks at the rows and the group's offsets

    def __init__(self, bootstrap: str, state: RebuildState, participant: Participant, step: str | None) -> None:
        self.bootstrap = bootstrap
        self.state = state
        self.name = participant.name
        self.step = step if participant.compensator else None  # what a compensator waits for
        self._checked = 0.0
        self._said = False

    async def wait_for_step(self, stop: asyncio.Event) -> bool:
        """A compensator: wait until its step has replayed its history; False if stopped first."""
        said = False
        while self.step is not None and not stop.is_set():
            step = (await asyncio.to_thread(self.state.rows)).get(self.step)
            if step is None or step.replayed:
                return True
            if not said:
                log.info("%s: rebuilding: waiting for %s to replay its history first", self.name, self.step)
                said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.CHECK_EVERY)
        return not stop.is_set()

    async def over(self, consumer: AIOKafkaConsumer) -> bool:
        """True once the service's rebuild is over (looked at every CHECK_EVERY seconds at most);
        ``RebuildRequired`` if a new one began meanwhile (the database lost again)."""
        if time.monotonic() - self._checked < self.CHECK_EVERY:
            return False
        self._checked = time.monotonic()
        rows = await asyncio.to_thread(self.state.rows)
        mine = rows.get(self.name)
        if CREATED in rows or (mine is not None and mine.targets is None):
            raise RebuildRequired(f"{self.name}: its database was lost again during its rebuild")
        if mine is None:
            return True
        if not mine.replayed and mine.targets is not None:
            try:
                if not await caught_up(consumer, mine.targets):
                    return False
            except KafkaError as exc:  # the broker or the group's coordinator: ask again later
                log.info("%s: rebuilding: %s; asking again", self.name, exc)
                return False
            await asyncio.to_thread(self.state.replayed, self.name)
            log.info("%s: rebuilding: recorded history re-applied", self.name)
        if await asyncio.to_thread(self.state.finish):
            return True
        if not self._said:
            waiting = [r.consumer for r in (await asyncio.to_thread(self.state.rows)).values() if not r.replayed]
            log.info("%s: rebuilding: waiting for %s before applying what queued", self.name, ", ".join(waiting))
            self._said = True
        return False
