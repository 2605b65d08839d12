"""Starting capture sagas and watching their outcomes, as any client would: through the topics.

The envelope of a PokemonEncountered filled from the Pokédex (``start_event``), many of them published at
once (``publish``, through engine.client), and a watcher of ``capture.outcomes`` for the demo, the bench
and the tests (``TopicWatcher``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from contracts import topics
from contracts.events import PokemonEncountered
from engine import client
from engine.broker import kafka
from engine.wire.envelope import Envelope, wrap


def start_event(
    saga_id: str | None,
    trainer: dict[str, Any],
    pokemon: dict[str, Any],
    source: str = "pokesaga/cli",
    deadline: datetime | None = None,
) -> Envelope:
    """The PokemonEncountered envelope of a new saga (validated; fills from the Pokédex).
    ``deadline``: when the saga must be over (``sagadeadline``); every step passes it on."""
    saga_id = saga_id or str(uuid.uuid4())
    event = PokemonEncountered.model_validate({"trainer": trainer, "pokemon": pokemon})
    return wrap(event, saga_id=saga_id, source=source, causation_id=None, deadline=deadline)


@dataclass(frozen=True)
class Outcome:
    saga_id: str
    type: str
    data: dict[str, Any]

    @property
    def detail(self) -> str:
        if self.type == "PokemonDelivered":
            return f"{self.data['location']} slot {self.data['slot']}"
        undone = ", ".join(self.data.get("undone", [])) or "nothing"
        return f"{self.data['reason']} at {self.data['failed_step']}; undone: {undone}"


class TopicWatcher:
    """Reads ``topic`` from its current end: open it before publishing what you wait for."""

    def __init__(self, bootstrap: str, topic: str = topics.OUTCOMES) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer = kafka.consumer(bootstrap, None)
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.outcomes: dict[str, list[Outcome]] = {}

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

    async def poll(self, timeout_ms: int = 200) -> list[Outcome]:
        """Read what arrived; returns the new records that are saga events, as outcomes."""
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        new = []
        for records in batch.values():
            for record in records:
                self.records.append(record)
                try:
                    doc = json.loads(record.value or b"")
                    outcome = Outcome(doc["sagaid"], doc["type"], doc["data"])
                except (ValueError, KeyError, TypeError):
                    continue
                self.outcomes.setdefault(outcome.saga_id, []).append(outcome)
                new.append(outcome)
        return new

    async def wait_for(self, saga_ids: Iterable[str], timeout: float) -> dict[str, Outcome]:
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


async def publish(bootstrap: str, envelopes: Iterable[Envelope]) -> None:
    """Produce start events to ``capture.status``, keyed by saga id, acks=all (engine.client's, for the
    capture saga; ``pokesaga start`` is an engine.client.Client)."""
    from capture.saga import CAPTURE

    await client.publish(CAPTURE, bootstrap, envelopes)
