"""What the engine's tests do with the toy saga: its events as envelopes, records as the loop hands
them over, a batch processor for one of its participants, a topic read from its end."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from sqlalchemy import Engine, text

from engine.broker import kafka
from engine.events import Event
from engine.participant import Handler, UnitOfWork
from engine.retry import RetryPolicy
from engine.settings import Settings
from engine.wire.envelope import Envelope, wrap
from engine.wire.record import Record
from engine.worker import prepare
from engine.worker.batch.processor import BatchProcessor
from engine.worker.batch.result import BatchResult
from engine.worker.loop import ParticipantLoop
from tests.toy.events import SECOND, Asked, FirstDone, SecondFailed
from tests.toy.handlers import do_second
from tests.toy.saga import TOY
from tests.toy.tables import ToyRecords

_OFFSETS = itertools.count(1_000_000)  # records as a partition hands them over: each further on


@dataclasses.dataclass
class Rec:
    """A record as the loop hands it over (our own Record port, not an aiokafka object). Without a
    ``topic``, it stands on its event's topic (a participant takes an event only from there), or on
    ``SECOND`` when its value is no event of the toy saga."""

    value: bytes | None
    topic: str = ""
    partition: int = 0
    offset: int = dataclasses.field(default_factory=lambda: next(_OFFSETS))
    key: bytes | None = b"saga"
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        if not self.topic:
            try:
                kind = json.loads(self.value or b"")["type"]
            except (ValueError, TypeError, KeyError):
                kind = None
            known = TOY.types.get(kind) if isinstance(kind, str) else None
            self.topic = known.topic if known is not None else SECOND


def asked(saga_id: str, name: str = "Ann", refuse: bool = False) -> Envelope:
    """A start event, as a client writes it to ``toy.first``."""
    return wrap(Asked(name=name, refuse=refuse), saga_id=saga_id, source="test", causation_id=None)


def first_done(saga_id: str, name: str = "Ann") -> Envelope:
    """What the first step published: the second step's input."""
    return wrap(FirstDone(name=name), saga_id=saga_id, source="test", causation_id=f"cause-{saga_id}")


def second_failed(
    saga_id: str, name: str = "Ann", undone: tuple[str, ...] = (), failed_step: str = "second"
) -> Envelope:
    """The second step refused: the compensation's input, on ``toy.failures``."""
    event = SecondFailed(name=name, refuse=True, reason="refused", failed_step=failed_step, undone=undone)
    return wrap(event, saga_id=saga_id, source="test", causation_id=f"done-{saga_id}")


def with_deadline(envelope: Envelope, seconds_from_now: float) -> Envelope:
    """``envelope`` with its saga's deadline ``seconds_from_now`` (negative: passed)."""
    return envelope.model_copy(update={"sagadeadline": datetime.now(UTC) + timedelta(seconds=seconds_from_now)})


def engine_for(service: str, settings: Settings) -> Engine:
    """The service's engine, its tables migrated."""
    return prepare.open_database(TOY.services[service], settings)[0]


def processor_for(name: str, settings: Settings, **handlers: Handler) -> BatchProcessor:
    """A batch processor of participant ``name``, some of its handlers replaced."""
    participant = TOY.participants[name]
    participant = dataclasses.replace(participant, handlers={**participant.handlers, **handlers})
    return BatchProcessor(participant, TOY.types, engine_for(participant.service, settings), settings)


async def applied(processor: BatchProcessor, records: Sequence[Record]) -> BatchResult:
    """The batch applied as the loop applies it."""
    return await processor.apply(records)


FAST = RetryPolicy(initial_interval=0.001, maximum_interval=0.002, maximum_attempts=3)
UNLIMITED = RetryPolicy(initial_interval=0.001, maximum_interval=0.002, maximum_attempts=0)


async def retried(processor: BatchProcessor, first: BatchResult, timeout: float = 30) -> BatchResult:
    """What the loop does after ``first``: apply the parked records as they fall due, until none is
    left; everything merged into ``first``."""
    deadline = time.monotonic() + timeout
    while processor.parked.count(processor.engine):
        assert time.monotonic() < deadline, "records still parked"
        records, _ = processor.parked_records(100)
        if records:
            first.merge(await processor.apply(records))
    return first


def outcomes(result: BatchResult) -> list[str]:
    """The types of what a batch published, without the retry notices."""
    return [row.type for row in published(result)]


def published(result: BatchResult) -> list[Any]:
    """The rows a batch published, without the retry notices."""
    return [row for row in result.outbox if row.topic != TOY.retries_topic]


def tally(processor: BatchProcessor, name: str) -> int:
    """How many times the processor's service applied a step for ``name``."""
    with processor.engine.connect() as conn:
        return ToyRecords(conn).count(name)


def flaky(failures: int, then: Handler | None = None, error: type[Exception] = RuntimeError) -> Handler:
    """A handler that fails ``failures`` times (each after counting the name, a write that must roll
    back with the attempt), then runs ``then``."""
    calls = {"n": 0}

    def handler(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        calls["n"] += 1
        if calls["n"] <= failures or then is None:
            uow.records.add_one(event.name)  # a write that must be rolled back with the attempt
            raise error(f"boom {calls['n']}")
        return then(event, uow)

    return handler


def ordered(log: list[str], fails_for: set[str] = frozenset()) -> Handler:  # type: ignore[assignment]
    """A handler that fails while its saga is in ``fails_for``, and logs what it applied: the second
    step for ``FirstDone``, nothing for any other event (a participant given it for more types can
    queue several records of one saga)."""

    def handler(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        if uow.saga_id in fails_for:
            raise RuntimeError(f"{uow.saga_id} is not ready")
        log.append(f"{uow.saga_id}:{type(event).__name__}")
        return do_second(event, uow) if isinstance(event, FirstDone) else []

    return handler


def marked(processor: BatchProcessor, saga_id: str) -> str | None:
    """The mark the processor's service left for ``saga_id`` (done, undone, failed:<reason>), if any."""
    with processor.engine.connect() as conn:
        return ToyRecords(conn).outcome(saga_id)


async def produce(bootstrap: str, topic: str, *values: bytes, key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def for_saga(records: list[Any], saga_id: str) -> list[dict[str, Any]]:
    """The documents of ``records`` that belong to ``saga_id``."""
    docs = [json.loads(r.value) for r in records]
    return [d for d in docs if d.get("sagaid") == saga_id]


@dataclasses.dataclass
class Seen:
    saga_id: str
    type: str
    data: dict[str, Any]


class TopicWatcher:
    """Reads ``topic`` from its current end: open it before publishing what you wait for."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer = kafka.consumer(bootstrap, None)
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.outcomes: dict[str, list[Seen]] = {}

    async def __aenter__(self) -> TopicWatcher:
        tps = [TopicPartition(self.topic, p) for p in await kafka.partition_ids(self.bootstrap, self.topic)]
        await self.consumer.start()
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything can arrive
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> None:
        """Read what arrived; the saga events among it go to ``outcomes``, by saga."""
        for records in (await self.consumer.getmany(timeout_ms=timeout_ms)).values():
            for record in records:
                self.records.append(record)
                try:
                    doc = json.loads(record.value or b"")
                    seen = Seen(doc["sagaid"], doc["type"], doc["data"])
                except (ValueError, KeyError, TypeError):
                    continue
                self.outcomes.setdefault(seen.saga_id, []).append(seen)

    async def wait_for(self, saga_ids: Sequence[str], timeout: float) -> dict[str, Seen]:
        """The first event of each saga id, waiting up to ``timeout`` seconds in all."""
        wanted = set(saga_ids)
        deadline = asyncio.get_running_loop().time() + timeout
        while not wanted <= self.outcomes.keys() and asyncio.get_running_loop().time() < deadline:
            await self.poll()
        return {s: self.outcomes[s][0] for s in wanted if s in self.outcomes}

    async def drain(self, timeout: float = 30) -> list[ConsumerRecord[bytes, bytes]]:
        """Everything published to the topic until now (up to its current end offsets)."""
        ends = await self.consumer.end_offsets(list(self.consumer.assignment()))
        deadline = asyncio.get_running_loop().time() + timeout
        while [tp for tp, end in ends.items() if await self.consumer.position(tp) < end]:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {self.topic} to its end within {timeout:.0f}s")
            await self.poll()
        return self.records


@asynccontextmanager
async def running(loop: ParticipantLoop) -> AsyncIterator[ParticipantLoop]:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.ready.wait(), 30)  # started: its start-up flush is behind it
        yield loop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # stops promptly, flusher and pruner included


def renamed(engine: Engine, table: str, to: str) -> None:
    """A table the loop uses is gone (renamed): every statement on it fails in the database."""
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} RENAME TO {to}"))
