"""Starting sagas and watching their outcomes, as any client would: through the topics."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from contracts import topics
from contracts.envelope import Envelope, wrap
from contracts.events import PokemonEncountered
from runtime import kafka


def start_event(
    saga_id: str | None, trainer: dict[str, Any], pokemon: dict[str, Any], source: str = "pokesaga/cli"
) -> Envelope:
    """The PokemonEncountered envelope of a new saga (validated; fills from the Pokédex)."""
    saga_id = saga_id or str(uuid.uuid4())
    event = PokemonEncountered.model_validate({"trainer": trainer, "pokemon": pokemon})
    return wrap(event, saga_id=saga_id, source=source, causation_id=None)


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


class OutcomeWatcher:
    """Reads ``capture.outcomes`` from its current end; open it before publishing starts."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = kafka.consumer(bootstrap, None)
        self.outcomes: dict[str, list[Outcome]] = {}

    async def __aenter__(self) -> OutcomeWatcher:
        tps = [TopicPartition(topics.OUTCOMES, p) for p in await kafka.partition_ids(self.bootstrap, topics.OUTCOMES)]
        await self.consumer.start()
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before any saga can finish
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> list[Outcome]:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        new = []
        for records in batch.values():
            for record in records:
                try:
                    doc = json.loads(record.value)
                    outcome = Outcome(doc["sagaid"], doc["type"], doc["data"])
                except (ValueError, KeyError, TypeError):
                    continue
                self.outcomes.setdefault(outcome.saga_id, []).append(outcome)
                new.append(outcome)
        return new

    async def wait_for(self, saga_ids: Iterable[str], timeout: float) -> dict[str, Outcome]:
        """The first outcome of each saga id, waiting up to ``timeout`` seconds in all."""
        wanted = set(saga_ids)
        deadline = asyncio.get_running_loop().time() + timeout
        while not wanted <= self.outcomes.keys() and asyncio.get_running_loop().time() < deadline:
            await self.poll()
        return {s: self.outcomes[s][0] for s in wanted if s in self.outcomes}


async def publish(bootstrap: str, envelopes: Iterable[Envelope]) -> None:
    """Produce start events to ``capture.status``, keyed by saga id, acks=all."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topics.STATUS, env.to_json(), key=env.sagaid.encode()) for env in envelopes]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
