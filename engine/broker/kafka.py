"""Kafka clients and topics: the only place that builds aiokafka objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    KafkaError,
    LeaderNotAvailableError,
)

from engine.broker import security, unreadable

log = logging.getLogger(__name__)
T = TypeVar("T")


def producer(bootstrap: str, linger_ms: int = 0, **overrides: object) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all).

    No linger by default: the loop sends a whole batch before awaiting it, so records batch
    anyway, and a linger of 2 ms was measured to add ~3.7 ms to every hop.
    """
    options: dict[str, object] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": linger_ms,
        "request_timeout_ms": 30000,
    }
    options.update(security.options_for(bootstrap))
    options.update(overrides)
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **options)


def consumer(bootstrap: str, group: str | None, *subscribe: str, **overrides: object) -> AIOKafkaConsumer:
    """A consumer with auto-commit off: offsets are committed by the loop, after publishing.

    A record it cannot read as written (a header key that is not UTF-8) comes out marked, not
    as an exception that would stop the partition for good: see engine.broker.unreadable."""
    unreadable.install()
    options: dict[str, object] = {
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 100,
        "max_poll_interval_ms": 300000,
        "session_timeout_ms": 6000,  # a participant's loop takes its own: Settings.group_membership
        "heartbeat_interval_ms": 1000,
    }
    options.update(security.options_for(bootstrap))
    options.update(overrides)
    return AIOKafkaConsumer(*subscribe, bootstrap_servers=bootstrap, **options)


def admin_client(bootstrap: str, **overrides: object) -> AIOKafkaAdminClient:
    """An admin client (create and describe topics, groups, offsets)."""
    options: dict[str, object] = {**security.options_for(bootstrap), **overrides}
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)


MAX_REPLICATION = 3  # more copies buy no safety a saga needs, and cost every write


def replicas_for(brokers: int, configured: int | None) -> int:
    """How many replicas a new topic gets: ``configured``, else one per broker, at most 3."""
    return configured or max(1, min(MAX_REPLICATION, brokers))


def topic_configs(replication: int) -> dict[str, str]:
    """A replicated topic accepts a write (acks=all) once all but one replica hold it: an
    acknowledged record survives the loss of a broker with its disk, and one broker down does
    not stop the saga."""
    return {"min.insync.replicas": str(replication - 1)} if replication >= 2 else {}


class ReplicationUnavailable(Exception):
    """More replicas asked than the cluster has brokers to hold them; the message is one line."""


async def with_admin(bootstrap: str, work: Callable[[AIOKafkaAdminClient], Awaitable[T]], timeout: float = 60) -> T:
    """``work`` done with an admin client, tried again while the cluster answers with a
    retriable error: a broker that is down but still in the metadata (NodeNotReady), a
    controller changing hands, a leader being elected."""
    deadline = asyncio.get_running_loop().time() + timeout
    first = True
    while True:
        admin = admin_client(bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            return await work(admin)
        except KafkaError as exc:
            if first and isinstance(exc, KafkaConnectionError) and (reason := await security.refusal(bootstrap)):
                raise security.AccessRefused(reason) from None  # a wrong password is not waited for
            first = False
            if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                raise
            quiet = not isinstance(exc, KafkaConnectionError)  # a leader being elected: nothing to tell
            log.log(logging.DEBUG if quiet else logging.INFO, "cluster %s not ready (%s); retrying", bootstrap, exc)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)


async def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, timeout: float = 60, replication: int | None = None
) -> int:
    """Create the topics that do not exist yet, and return once every one has its partitions;
    safe to call from many processes at once. New topics get ``replication`` replicas (unset:
    see replicas_for) and ``min.insync.replicas`` one less; returns that replication."""
    names = list(names)

    async def ensure(admin: AIOKafkaAdminClient) -> int:
        brokers = len((await admin.describe_cluster())["brokers"])
        wanted = replicas_for(brokers, replication)
        existing = set(await admin.list_topics())
        configs = topic_configs(wanted)
        missing = [NewTopic(n, partitions, wanted, topic_configs=configs) for n in names if n not in existing]
        if missing:
            created = await admin.create_topics(missing)
            for _name, code, *_message in created.topic_errors:
                if code == InvalidReplicationFactorError.errno:
                    raise ReplicationUnavailable(
                        f"POKESAGA_REPLICATION_FACTOR: {wanted} replicas asked, and {brokers} broker(s) of "
                        f"{bootstrap} answer; lower it, or start the missing brokers"
                    )
        described = await admin.describe_topics(names)
        if not all(d.get("partitions") and not d.get("error_code") for d in described):
            raise LeaderNotAvailableError("topics created, partitions not ready yet")
        return wanted

    try:
        return await with_admin(bootstrap, ensure, timeout)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        raise KafkaConnectionError(
            f"topics {', '.join(names)} not ready on {bootstrap} after {timeout:.0f}s ({type(exc).__name__})"
        ) from None


async def replication_of(bootstrap: str, names: Iterable[str]) -> dict[str, int]:
    """The replicas of each existing topic among ``names`` (its least replicated partition's)."""

    async def describe(admin: AIOKafkaAdminClient) -> list[Any]:
        existing = set(await admin.list_topics())
        return await admin.describe_topics([n for n in names if n in existing])

    described = await with_admin(bootstrap, describe)
    return {d["topic"]: min(len(p["replicas"]) for p in d["partitions"]) for d in described if d.get("partitions")}


async def topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    """The value of the configuration ``name`` of ``topic``, as the broker applies it."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})
    (response,) = await with_admin(bootstrap, lambda admin: admin.describe_configs([resource]))
    for _code, _message, _type, _name, entries in response.resources:
        for entry in entries:
            if entry[0] == name:
                return str(entry[1]) if entry[1] is not None else None
    return None


async def partition_ids(bootstrap: str, topic: str) -> list[int]:
    """The partition ids of ``topic`` (which must exist)."""
    (description,) = await with_admin(bootstrap, lambda admin: admin.describe_topics([topic]))
    return sorted(p["partition"] for p in description["partitions"])


async def topic_exists(bootstrap: str, topic: str) -> bool:
    return topic in set(await with_admin(bootstrap, lambda admin: admin.list_topics()))


async def commit_offsets(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` without joining it (the group must have no live member)."""
    committer = consumer(bootstrap, group)
    await committer.start()
    try:
        committer.assign(list(offsets))
        await committer.commit(offsets)
    finally:
        await committer.stop()


async def _described(admin: AIOKafkaAdminClient, group: str) -> tuple[int, str, int]:
    """One group, through a started admin client: its error code, state and live members."""
    (response,) = await admin.describe_consumer_groups([group])
    error, _name, state, _protocol_type, _protocol, members = response.groups[0]
    return error, state, len(members)


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state (``Stable``, ``Empty``, …) and how many live members it has."""
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        error, state, members = await _described(admin, group)
    finally:
        await admin.close()
    if error:  # e.g. the coordinator moving: not "no members"
        raise KafkaError(f"describing consumer group {group!r} failed with error code {error}")
    return state, members


async def groups_stable(bootstrap: str, groups: Iterable[str]) -> bool:
    """True when every group is Stable with at least one member (its service is consuming): one
    admin client for all of them, since callers poll this. A group at a time: asked for several
    groups at once, aiokafka 0.14 failed to decode the answer ("Buffer underrun decoding string")."""
    admin = admin_client(bootstrap)
    try:
        await admin.start()
        for group in groups:
            error, state, members = await _described(admin, group)
            if error or state != "Stable" or not members:
                return False
    except KafkaError:  # no coordinator yet (a new broker): not stable yet
        return False
    finally:
        await admin.close()
    return True


async def scan_to_end(
    bootstrap: str, topics: Iterable[str], group: str | None = None, ends: dict[TopicPartition, int] | None = None
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topics`` up to their end offsets as they are now, one at a time.

    From the group's committed position when ``group`` is given, else from the beginning.
    ``ends``, when given, is filled with the end offsets the scan stops at. Records are not
    held: a scan over a long history costs the memory of one fetch.
    """
    tps = [TopicPartition(t, p) for t in topics for p in await partition_ids(bootstrap, t)]
    reader = consumer(bootstrap, group)
    await reader.start()
    try:
        reader.assign(tps)
        stop_at = await reader.end_offsets(tps)
        if ends is not None:
            ends.update(stop_at)
        if group is None:
            await reader.seek_to_beginning(*tps)
        while [tp for tp in tps if await reader.position(tp) < stop_at[tp]]:
            for batch in (await reader.getmany(timeout_ms=500, max_records=5000)).values():
                for record in batch:
                    if record.offset < stop_at[TopicPartition(record.topic, record.partition)]:
                        yield record
    finally:
        await reader.stop()


async def read_to_end(
    bootstrap: str, topics: Iterable[str], group: str | None = None
) -> tuple[list[ConsumerRecord[bytes, bytes]], dict[TopicPartition, int]]:
    """Every record of ``topics`` up to their end offsets as they are now, and those offsets."""
    ends: dict[TopicPartition, int] = {}
    return [record async for record in scan_to_end(bootstrap, topics, group, ends)], ends


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The current end offset of every partition of ``topics``."""
    tps = [TopicPartition(t, p) for t in topics for p in await partition_ids(bootstrap, t)]
    reader = consumer(bootstrap, None)
    await reader.start()
    try:
        return dict(await reader.end_offsets(tps))
    finally:
        await reader.stop()


async def beginning_offsets(bootstrap: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The first offset still on the broker of each of ``tps``."""
    reader = consumer(bootstrap, None)
    await reader.start()
    try:
        return dict(await reader.beginning_offsets(list(tps)))
    finally:
        await reader.stop()


async def committed_offsets(bootstrap: str, group: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The committed offsets of ``group`` (0 where nothing was committed)."""
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        return await committed_through(admin, group, tps)
    finally:
        await admin.close()


async def committed_through(
    admin: AIOKafkaAdminClient, group: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """``committed_offsets`` through an admin client already started (for a caller that polls)."""
    offsets = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    return {tp: max(0, meta.offset) for tp, meta in offsets.items()}  # -1: none committed
