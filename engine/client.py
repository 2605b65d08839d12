"""A client of any declared saga: start one, read how it ended — through the topics, as any Kafka client could.

    async with Client(TRANSFER, settings) as client:
        saga_id = await client.start(TransferRequested(...), deadline=timedelta(seconds=30))
        outcome = await client.outcome(saga_id, timeout=60)  # the Envelope of MoneyDeposited or TransferFailed

``start`` makes the saga's topics that are missing (as a participant does), wraps the event in its envelope
(``engine.wrap``), keys it by the saga id and publishes it to the event's topic, acks=all. ``outcome`` reads
the saga's outcome topics (those of ``saga.outcomes``) from where they ended when the client was opened: an
outcome published after that, and only while ``watch_outcomes`` is on (the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine import versions
from engine.broker import kafka
from engine.broker.producing import RenewingProducer
from engine.events import Event
from engine.saga import Saga
from engine.settings import Settings
from engine.wire.envelope import Envelope, wrap


class Client:
    """Starts sagas of ``saga`` and reads their outcomes (``settings``: which brokers, how many partitions and
    replicas a missing topic gets; TLS and SASL as every client of this process, see engine.broker.security)."""

    def __init__(self, saga: Saga, settings: Settings, *, source: str = "", watch_outcomes: bool = True) -> None:
        self.saga = saga
        self.settings = settings
        versions.check_pins(settings.publish_versions, saga.types, "POKESAGA_PUBLISH_VERSIONS")
        self.source = source or f"{saga.name}/client"
        self.watch_outcomes = watch_outcomes
        self.outcome_topics = sorted({event.topic for event in saga.outcomes})
        self._producer: RenewingProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._outcomes: dict[str, Envelope] = {}

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Make the missing topics, start the producer and, when watching, read the outcome topics from their end."""
        bootstrap = self.settings.bootstrap
        await kafka.ensure_topics(
            bootstrap, self.saga.all_topics(), self.settings.partitions, 15, self.settings.replication_factor
        )
        try:
            if self.watch_outcomes:
                self._reader = await watch(bootstrap, self.outcome_topics)
            self._producer = RenewingProducer(self.source, lambda: kafka.producer(bootstrap))
            await self._producer.start()
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to tell
                await self.close()
            raise

    async def close(self) -> None:
        producer, reader, self._producer, self._reader = self._producer, self._reader, None, None
        try:
            if producer is not None:
                await producer.stop()
        finally:
            if reader is not None:
                await reader.stop()

    def envelope(
        self, event: Event, saga_id: str | None = None, deadline: datetime | timedelta | None = None
    ) -> Envelope:
        """``event``, a start event of the saga, in the envelope ``start`` publishes (a new saga id if none)."""
        if not isinstance(event, self.saga.start):
            raise ValueError(
                f"{type(event).__name__} does not start the {self.saga.name} saga; expected {self.saga.start.__name__}"
            )
        if isinstance(deadline, timedelta):
            deadline = datetime.now(UTC) + deadline
        if saga_id is not None:
            check_saga_id(saga_id)
        saga_id = saga_id or str(uuid.uuid4())
        pinned = self.settings.publish_versions.get(type(event).__name__)
        return wrap(event, saga_id=saga_id, source=self.source, causation_id=None, deadline=deadline, version=pinned)

    async def start(
        self, event: Event, saga_id: str | None = None, deadline: datetime | timedelta | None = None
    ) -> str:
        """Publish ``event`` as the start of a saga (``saga_id``: default a new UUID; ``deadline``: when it must
        be over, a time or a span from now — a step reached later gives up with deadline_exceeded). Its id."""
        envelope = self.envelope(event, saga_id, deadline)
        await self.publish([envelope])
        return envelope.sagaid

    async def publish(self, envelopes: Iterable[Envelope]) -> None:
        """Publish start envelopes made elsewhere, each to its event's topic, keyed by its saga id (acks=all).

        A KafkaError when the brokers refuse them; after a refusal for good the next publish takes a new
        producer (see engine.broker.producing), so a client kept open is not refused for ever after."""
        if self._producer is None:
            raise RuntimeError("the client is not open: use 'async with Client(...)' or 'await client.open()'")
        await self._producer.attempt(lambda producer: send(producer, self.saga, envelopes))

    async def outcome(self, saga_id: str, timeout: float) -> Envelope | None:
        """The saga's outcome (the first outcome event keyed by ``saga_id``), waiting up to ``timeout`` seconds;
        None if none came in that time."""
        if self._reader is None:
            raise RuntimeError("this client does not watch outcomes: open it with watch_outcomes=True")
        until = asyncio.get_running_loop().time() + timeout
        while saga_id not in self._outcomes:
            left = until - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            batch = await self._reader.getmany(timeout_ms=int(min(left, 0.2) * 1000) or 1)
            for records in batch.values():
                for record in records:
                    if record.key is None or not record.value:
                        continue
                    key = record.key.decode("utf-8", "replace")
                    try:
                        envelope = Envelope.model_validate_json(record.value)
                    except ValueError:
                        continue  # not an envelope: nothing this client can tell of
                    if envelope.type in self.saga.outcome_types and envelope.sagaid == key:
                        self._outcomes.setdefault(key, envelope)
        return self._outcomes[saga_id]


async def watch(bootstrap: str, topics: Iterable[str]) -> AIOKafkaConsumer:
    """A consumer (no group) assigned every partition of ``topics``, positioned at their current end."""
    reader = kafka.consumer(bootstrap, None)
    tps = [TopicPartition(topic, p) for topic in topics for p in await kafka.partition_ids(bootstrap, topic)]
    await reader.start()
    try:
        reader.assign(tps)
        await reader.seek_to_end(*tps)
        for tp in tps:  # the end offsets resolved now, before anything awaited can arrive
            await reader.position(tp)
    except BaseException:
        await reader.stop()
        raise
    return reader


async def send(producer: AIOKafkaProducer, saga: Saga, envelopes: Iterable[Envelope]) -> None:
    """Send start envelopes of ``saga``, each to its start event's topic keyed by its saga id, and await them."""
    futures: list[Any] = []
    for envelope in envelopes:
        topic = saga.types[envelope.type].topic if envelope.type in saga.types else saga.start.topic
        futures.append(await producer.send(topic, envelope.to_json(), key=envelope.sagaid.encode()))
    await asyncio.gather(*futures)


async def publish(saga: Saga, bootstrap: str, envelopes: Iterable[Envelope]) -> None:
    """Publish start envelopes with a producer of their own (no topic made, no outcome watched)."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        await send(producer, saga, envelopes)
    finally:
        await producer.stop()


MAX_SAGA_ID = 200  # the envelope's subject


def check_saga_id(saga_id: str) -> str:
    """``saga_id``, or ValueError saying why it cannot name a saga (empty, too long, a control character)."""
    if not saga_id:
        raise ValueError("a saga id cannot be empty")
    if len(saga_id) > MAX_SAGA_ID:
        raise ValueError(f"a saga id is at most {MAX_SAGA_ID} characters; this one has {len(saga_id)}")
    if not saga_id.isprintable():
        raise ValueError(f"a saga id is printable text; {saga_id[:40]!r} is not")
    return saga_id
