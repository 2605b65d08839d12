"""Records a hostile client can write, for the hostile-input tests.

Everything here goes through a plain Kafka producer, as any client's would: no pokesaga code
writes these records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from aiokafka import AIOKafkaProducer

# A record whose header key is not UTF-8. No mainstream client writes one, but the protocol
# allows it; aiokafka's pure-Python record builder writes whatever ``str.encode`` returns.
_UNREADABLE_PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class RawKey(str):
    def encode(self, *args, **kwargs):
        return b"\\xff\\xfe-not-utf-8"

async def main(bootstrap, topic, key, value):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topic, value.encode(), key=key.encode(), headers=[("fine", b"1"), (RawKey("x"), b"v")]
        )
        print(meta.partition, meta.offset)
    finally:
        await producer.stop()

asyncio.run(main(*sys.argv[1:]))
"""


def produce_unreadable(bootstrap: str, topic: str, key: str, value: str) -> tuple[int, int]:
    """Write one record whose second header key is the bytes ff fe (not UTF-8); its (partition, offset)."""
    env = {**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"}  # the pure-Python builder, which we can feed bytes
    done = subprocess.run(
        [sys.executable, "-c", _UNREADABLE_PRODUCER, bootstrap, topic, key, value],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    partition, offset = done.stdout.split()
    return int(partition), int(offset)


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]], headers: list[Any] | None = None
) -> list[tuple[int, int]]:
    """Write ``(key, value)`` records with a plain producer; their (partition, offset), in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2_000_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=headers) for key, value in records]
        placed = []
        for future in futures:
            meta = await future
            placed.append((meta.partition, meta.offset))
        return placed
    finally:
        await producer.stop()


def nested(depth: int) -> bytes:
    """A JSON document nested ``depth`` levels deep."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def envelope(saga_id: str, event_id: str, type_: str = "PokemonEncountered", **changes: Any) -> dict[str, Any]:
    """A valid CloudEvents envelope of a start event, as a client writes it; ``changes`` override fields."""
    document: dict[str, Any] = {
        "specversion": "1.0", "id": event_id, "source": "hostile-client", "type": type_,
        "time": "2026-11-23T10:00:00Z", "subject": saga_id, "sagaid": saga_id,
        "datacontenttype": "application/json", "dataversion": 1,
        "data": {"trainer": {"name": "Mallory", "lead": {"name": "Pikachu", "level": 60}},
                 "pokemon": {"name": "Pidgey", "level": 5}},
    }  # fmt: skip
    document.update(changes)
    return document


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()
