"""What the tracker asks the broker itself, beside the records it observes: each consumer group's
lag and live members (read every few seconds), and a saga's records read again by their
coordinates, for its page's JSON. It only reads: no offset is committed, no group joined.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from engine.broker import kafka
from engine.wire.notices import rfc3339_from_epoch
from engine.wire.text import printable

log = logging.getLogger(__name__)

MAX_VALUE = 256 * 1024  # a record's value shown on the page, at most (the broker's limit is 1 MiB)
TIMEOUT = 5.0


class Broker:
    """One admin client and one group-less consumer, made on first use and made again after an error."""

    def __init__(self, bootstrap: str, groups: Mapping[str, Iterable[str]]) -> None:
        self.bootstrap = bootstrap
        self.groups = {group: list(topics) for group, topics in groups.items()}
        self.admin: AIOKafkaAdminClient | None = None
        self.reader: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()
        self.lag: dict[str, dict[str, Any]] = {g: {"lag": None, "members": None, "group_state": None} for g in groups}
        self.read_at: str | None = None
        self.error: str | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self.admin is None:
            admin = kafka.admin_client(self.bootstrap, request_timeout_ms=int(TIMEOUT * 1000))
            await admin.start()
            self.admin = admin
        if self.reader is None:
            reader = kafka.consumer(self.bootstrap, None, request_timeout_ms=int(TIMEOUT * 1000) + 1000)
            await reader.start()
            self.reader = reader
        return self.admin, self.reader

    async def close(self) -> None:
        admin, reader, self.admin, self.reader = self.admin, self.reader, None, None
        for client in (admin, reader):
            if client is not None:
                try:
                    await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
                except Exception:  # closing a client that lost its broker: nothing more to do
                    log.debug("tracker: closing a broker client failed", exc_info=True)

    async def read_lag(self) -> None:
        """Each group's lag (records on its topics past its committed offsets) and live members."""
        async with self.lock:
            try:
                await asyncio.wait_for(self._read_lag(), TIMEOUT * 2)
                self.error = None
            except (TimeoutError, KafkaError, OSError) as exc:
                self.error = printable(f"{type(exc).__name__}: {exc}", 300)
                for figures in self.lag.values():
                    figures.update(lag=None, members=None, group_state=None)
                await self.close()
            self.read_at = rfc3339_from_epoch(time.time())

    async def _read_lag(self) -> None:
        admin, reader = await self._clients()
        topics = sorted({t for ts in self.groups.values() for t in ts})
        described = await admin.describe_topics(topics)  # a group-less reader keeps no metadata of its own
        tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
        ends = await reader.end_offsets(tps)
        members: dict[str, tuple[str, int]] = {}
        for group in self.groups:  # one a request: aiokafka 0.14 misreads an answer about several
            (response,) = await admin.describe_consumer_groups([group])
            for error, name, state, _protocol_type, _protocol, group_members in response.groups:
                if not error:
                    members[name] = (state, len(group_members))
        for group, group_topics in self.groups.items():
            mine = [tp for tp in tps if tp.topic in group_topics]
            committed = await admin.list_consumer_group_offsets(group, partitions=mine)
            lag = sum(max(0, ends[tp] - max(0, committed[tp].offset if tp in committed else 0)) for tp in mine)
            state, count = members.get(group, (None, None))
            self.lag[group] = {"lag": lag, "members": count, "group_state": state}

    async def records(self, wanted: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], bytes | None]:
        """The value of the record at each (topic, partition, offset), or None where the broker has
        none there any more (deleted by retention, or past the end)."""
        found: dict[tuple[str, int, int], bytes | None] = dict.fromkeys(wanted)
        if not wanted:
            return found
        async with self.lock:
            try:
                await asyncio.wait_for(self._records(wanted, found), TIMEOUT * 2)
            except (TimeoutError, KafkaError, OSError):
                log.info("tracker: reading a saga's records again failed", exc_info=True)
                await self.close()
        return found

    async def _records(
        self, wanted: list[tuple[str, int, int]], found: dict[tuple[str, int, int], bytes | None]
    ) -> None:
        _admin, reader = await self._clients()
        tps = list(dict.fromkeys(TopicPartition(t, p) for t, p, _ in wanted))
        reader.assign(tps)
        first, ends = await reader.beginning_offsets(tps), await reader.end_offsets(tps)
        for topic, partition, offset in wanted:
            tp = TopicPartition(topic, partition)
            if not first.get(tp, 0) <= offset < ends.get(tp, 0):
                continue
            reader.assign([tp])
            reader.seek(tp, offset)
            batch = (await reader.getmany(tp, timeout_ms=int(TIMEOUT * 1000), max_records=1)).get(tp, [])
            if batch and batch[0].offset == offset:
                found[(topic, partition, offset)] = batch[0].value or b""


def shown(value: bytes | None) -> Any:
    """A record's value for the page: its JSON document, or its text when it is not JSON (cut to
    ``MAX_VALUE``); the page inserts either as text."""
    if value is None:
        return None
    if len(value) <= MAX_VALUE:
        try:
            document = json.loads(value)
            json.dumps(document, allow_nan=False)  # no NaN or 1e999 a browser's JSON could not read
            return document
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep: shown as text
            pass
    text = value[:MAX_VALUE].decode("utf-8", "replace")
    return text + ("…" if len(value) > MAX_VALUE else "")
