"""Identities that can start over: topics deleted and made again under running services.

A topic made again starts its offsets at 0 under a new topic id; the services keep their
databases, with positions recorded on the old topics. Nothing the services decide may take a
record of the new topics for one read before, whatever its timestamp says.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from capture.saga import CAPTURE
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine.broker import kafka
from engine.broker.topicids import topic_ids
from engine.wire.envelope import Envelope
from tests.databases import rows
from tests.e2e.conftest import CERTAIN, services
from tests.support import eventually


async def remake_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    """Delete ``names`` and make them again (a purge, a new cluster): new topic ids, offsets from 0."""
    before = await ids_of(bootstrap, names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([n for n in names if n in before])
    finally:
        await admin.close()

    async def made_again() -> bool:
        # A running client may make one again first (the broker creates topics asked for): any new id will do.
        await kafka.ensure_topics(bootstrap, names, partitions)
        now = await ids_of(bootstrap, names)
        return all(now.get(n) not in (None, before.get(n)) for n in names)

    await eventually(made_again, timeout=90, what=f"{names} deleted and made again")


async def ids_of(bootstrap: str, names: list[str]) -> dict[str, str]:
    """The topic id of each of ``names`` that exists (what kafka-topics --describe shows)."""
    consumer = kafka.consumer(bootstrap, None)
    await consumer.start()
    try:
        return await topic_ids(consumer, names) or {}
    finally:
        await consumer.stop()


async def publish_in_one_millisecond(bootstrap: str, envelopes: list[Envelope], stamp_ms: int) -> None:
    """Start events all dated ``stamp_ms``, as a client whose clock is behind, in one burst."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        futures = [
            await producer.send(topics.STATUS, e.to_json(), key=e.sagaid.encode(), timestamp_ms=stamp_ms)
            for e in envelopes
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def burst(prefix: str, count: int) -> list[Envelope]:
    """Sagas on every path's start: caught and delivered, or refused at status (an Electric type)."""
    return [
        start_event(
            f"{prefix}-{i}",
            {"name": f"{prefix}-T{i}"},
            {"name": "Pikachu"} if i % 5 == 4 else {"name": "Caterpie", **CERTAIN},
        )
        for i in range(count)
    ]


def test_saga_topics_deleted_and_made_again_under_running_services_lose_no_saga_of_a_burst_in_one_millisecond(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    with services(kafka_bootstrap, tmp_path) as settings:
        bootstrap = settings.bootstrap

        async def scenario() -> dict[str, list[str]]:
            before = burst(f"before-{run}", 10)
            async with TopicWatcher(bootstrap) as watcher:
                await publish(bootstrap, before)
                await watcher.wait_for({s.sagaid for s in before}, timeout=90)
            await remake_topics(bootstrap, CAPTURE.all_topics())
            after = burst(f"after-{run}", 30)
            async with TopicWatcher(bootstrap) as watcher:
                # One millisecond, an hour behind the services' clocks: before anything they passed.
                await publish_in_one_millisecond(bootstrap, after, int(time.time() * 1000) - 3_600_000)
                wanted = {s.sagaid for s in after}

                async def every_outcome() -> bool:
                    await watcher.poll()
                    return wanted <= watcher.outcomes.keys()

                await eventually(every_outcome, timeout=120, what="an outcome for every saga of the burst")
                records = await watcher.drain()
            found: dict[str, list[str]] = {}
            for record in records:
                doc = json.loads(record.value)
                if doc["sagaid"] in wanted:
                    found.setdefault(doc["sagaid"], []).append(doc["type"])
            return found

        found = asyncio.run(scenario())
        assert len(found) == 30 and all(len(types) == 1 for types in found.values()), found
        assert sorted({t for (t,) in found.values()}) == ["CaptureFailed", "PokemonDelivered"]
        applied = rows(settings, "status", f"select count(*) from statuses where saga_id like 'after-{run}-%'")
        assert applied == [(30,)]
