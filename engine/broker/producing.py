"""A long-lived idempotent producer that a refused batch does not leave stuck.

An idempotent producer numbers its records per partition, and the broker accepts only the next
number. aiokafka gives a batch its numbers when it sends it; when the broker then refuses the batch
for good (its principal lost Write on the topic, a record too large for it, or the broker's state
ran ahead of the client's across a restart), the numbers are spent but the records are not written.
Every later batch to that partition is then out of order (``OutOfOrderSequenceNumber``), for as long
as the producer lives: sending again cannot help (aio-libs/aiokafka#1017). The Java client bumps its
epoch; aiokafka cannot, so the fix is a new producer (a new producer id, numbers from 0).

``RenewingProducer.attempt`` runs one send on the current producer; when it fails that way, the
producer is stopped, and the caller's next attempt starts a new one first. Records the old producer
had written are sent again under the new id, so its partitions may hold a copy; consumers know a
copy by its event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import BrokerResponseError, ProducerFenced

log = logging.getLogger(__name__)
T = TypeVar("T")

STOP_SECONDS = 10.0  # the old producer's stop: its last batches are refused too, so this is quick


def spends_a_sequence(exc: BaseException) -> bool:
    """True when ``exc`` may have left the producer's sequence numbers ahead of the broker's: the
    broker refused a batch for good (a retriable refusal is sent again with the same numbers)."""
    return isinstance(exc, BrokerResponseError | ProducerFenced) and not exc.retriable


class RenewingProducer:
    """One producer made by ``make``, replaced by a new one after a send that spent its sequence."""

    def __init__(self, name: str, make: Callable[[], AIOKafkaProducer]) -> None:
        self.name = name
        self.make = make
        self.current = make()
        self.stale = False  # the current one was stopped and no new one could start yet
        self.renewed = 0  # how many times, said in the log
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self.current.start()

    async def stop(self) -> None:
        if not self.stale:
            await self.current.stop()

    async def attempt(self, send: Callable[[AIOKafkaProducer], Awaitable[T]]) -> T:
        """``send(producer)`` on the current producer. When it fails having spent a sequence, that producer
        is stopped and the error raised: the caller decides whether to try again, and its next attempt
        starts a new producer first (not at once: the refusal may last, and a producer with no Write
        anywhere may not even be given an id)."""
        if self.stale:
            await self._renew()
        producer = self.current
        try:
            return await send(producer)
        except Exception as exc:
            if spends_a_sequence(exc) and producer is self.current and not self.stale:
                self.stale = True
                log.warning(
                    "%s: the broker refused a batch for good (%s); this producer's sequence numbers no longer "
                    "match the broker's, so the next send takes a new producer",
                    self.name, type(exc).__name__,
                )  # fmt: skip
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(producer.stop(), STOP_SECONDS)
            raise

    async def _renew(self) -> None:
        async with self._lock:
            if not self.stale:  # a concurrent attempt renewed it
                return
            fresh = self.make()
            try:
                await fresh.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await fresh.stop()
                raise  # still stale: the next attempt tries again
            self.current, self.stale = fresh, False
            self.renewed += 1
            log.info("%s: a new producer took over (%d since start)", self.name, self.renewed)
