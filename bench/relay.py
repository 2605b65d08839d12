"""The null relay: a passthrough participant (consume → produce → commit), no database, no
validation. Four of them in a chain are the ceiling this broker, client and machine allow."""

from __future__ import annotations

import asyncio

from capture.saga import CAPTURE
from engine.broker import kafka

# The forward chain of the declaration: each step's topic, then where the last step's success goes.
CHAIN = (*(step.consumes for step in CAPTURE.steps), CAPTURE.steps[-1].succeeds_with[0].topic)


async def relay(bootstrap: str, source: str, target: str, stop: asyncio.Event, batch_size: int = 500) -> None:
    """Forward every record of ``source`` to ``target``; commit after the forward is acknowledged."""
    consumer = kafka.consumer(bootstrap, f"null-relay.{source}", source)
    producer = kafka.producer(bootstrap)
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=batch_size)
            if not batch:
                continue
            futures = [
                await producer.send(target, record.value, key=record.key)
                for records in batch.values()
                for record in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
    finally:
        await consumer.stop()
        await producer.stop()


async def run_chain(bootstrap: str, hop: int | None, stop: asyncio.Event) -> None:
    """Run one hop of the chain (0..3), or all four in this process when ``hop`` is None."""
    hops = range(len(CHAIN) - 1) if hop is None else [hop]
    await asyncio.gather(*(relay(bootstrap, CHAIN[i], CHAIN[i + 1], stop) for i in hops))
