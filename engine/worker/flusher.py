"""The outbox flusher: no outbox row waits for a restart.

A participant publishes its outbox rows right after its local commit, and an instance that
dies in between leaves them in the table. When instances share a database, the one that takes
the dead one's partitions finds those records in the inbox (duplicates) and moves on; the rows
would wait until the dead instance restarts. So every running participant loop, once a round
(about a second), reads the ids of its participant's rows in the outbox, reports how many there
are (``pokesaga_outbox_backlog``), and publishes, oldest first, those it has seen in the table
for longer than the grace period (``outbox_grace_seconds``), then deletes them.

A row's age is counted from when this instance first saw it, on this process's monotonic clock:
no schema change, and no clock shared between hosts. The rows this instance has published and not
yet deleted (its next transaction deletes them, or the loop once idle) are not counted or
published. Another live instance's rows are gone within a poll (``poll_timeout_ms``), so rows in
hand are rarely published twice; when they are (a broker slow for
longer than the grace period), consumers dedupe by event id. A round that fails (the database or
the broker unavailable) is logged and tried again on the next; the flusher never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from sqlalchemy import Engine

from engine.observe.sensor import LoopSensor
from engine.store.outbox import Outbox, OutboxRow

log = logging.getLogger(__name__)

CHUNK = 500  # rows read, published and deleted at a time


class OutboxFlusher:
    """Publishes a participant's outbox rows that no live instance is publishing."""

    def __init__(
        self,
        name: str,
        outbox: Outbox,
        engine: Engine,
        send: Callable[[Sequence[OutboxRow]], Awaitable[None]],
        grace: float,
        sensor: LoopSensor | None = None,
        in_hand: Callable[[], Collection[int]] = frozenset,
    ) -> None:
        self.name = name
        self.outbox = outbox
        self.engine = engine
        self.send = send  # publish in order and wait for every acknowledgement, or raise
        self.grace = grace
        self.in_hand = in_hand  # this instance's rows published, their deletion not yet committed
        self.sensor = sensor or LoopSensor(name, compensator=False)
        self.every = max(0.1, min(1.0, grace / 2))
        self.first_seen: dict[int, float] = {}  # row id → when this instance first saw it (monotonic)
        self.failing = False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.flush_round()
            except Exception as exc:
                if not self.failing:
                    log.warning("%s: outbox flush failed, trying again every %.1fs: %s", self.name, self.every, exc)
                self.failing = True
            else:
                if self.failing:
                    log.info("%s: outbox flush works again", self.name)
                self.failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    async def flush_round(self) -> int:
        """One round: count the rows, publish and delete those older than the grace period; how many."""
        ids = await asyncio.to_thread(self.outbox.waiting, self.engine)
        published_here = self.in_hand()
        ids = [i for i in ids if i not in published_here]
        self.sensor.on_outbox_backlog(len(ids))
        now = time.monotonic()
        self.first_seen = {i: self.first_seen.get(i, now) for i in ids}  # forgets the rows gone
        stranded = [i for i in ids if now - self.first_seen[i] >= self.grace]
        published = 0
        for start in range(0, len(stranded), CHUNK):
            rows = await asyncio.to_thread(self.outbox.rows, self.engine, stranded[start : start + CHUNK])
            await self.send(rows)
            self.sensor.on_published(rows)
            await asyncio.to_thread(self.outbox.mark_sent, self.engine, [row.id for row in rows])
            published += len(rows)
            self.sensor.on_outbox_backlog(len(ids) - start - len(rows))
        if published:
            log.warning(
                "%s: published %d outbox rows left unsent for over %.1fs (an instance died after its local commit?)",
                self.name, published, self.grace,
            )  # fmt: skip
        return published
