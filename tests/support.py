"""Helpers for tests that talk to the real broker: conditions polled with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        descriptions = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    tps = [TopicPartition(d["topic"], p["partition"]) for d in descriptions for p in d["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The committed offsets of ``group`` (0 where nothing was committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    finally:
        await admin.close()
    return {tp: max(0, meta.offset) for tp, meta in offsets.items()}


async def caught_up(bootstrap: str, groups: dict[str, Iterable[str]]) -> bool:
    """True when every group has committed up to the end of every partition it reads."""
    for group, topics in groups.items():
        ends = await end_offsets(bootstrap, topics)
        done = await committed(bootstrap, group, ends)
        if any(done.get(tp, 0) < end for tp, end in ends.items()):
            return False
    return True
