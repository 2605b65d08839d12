"""Helpers for tests that talk to the real broker: conditions polled with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from runtime import kafka


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def caught_up(bootstrap: str, groups: dict[str, Iterable[str]]) -> bool:
    """True when every group has committed up to the end of every partition it reads."""
    for group, topics in groups.items():
        ends = await kafka.end_offsets(bootstrap, topics)
        done = await kafka.committed_offsets(bootstrap, group, ends)
        if any(done.get(tp, 0) < end for tp, end in ends.items()):
            return False
    return True
