"""Topic ids: which incarnation of a topic a record was read from.

A topic deleted and made again under the same name (a purge, a new cluster, a broker restored
from nothing) starts its offsets over, so an offset alone cannot say whether a record was read
before. Kafka gives every topic a UUID when it is created (KIP-516); a position is recorded with
the id of the topic it was recorded on, and is void for any other (engine.store.inbox).

aiokafka's metadata request stops at version 5, before topic ids; this module asks for version
12 (Kafka 3.1 and later) with aiokafka's own protocol types. A broker too old to answer it
gives no ids, and positions are then taken as they are (README says what that gives up).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable
from io import BytesIO
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

log = logging.getLogger(__name__)

NO_ID = uuid.UUID(int=0)  # what a broker answers for a topic it does not know


class Uuid(AbstractType[uuid.UUID]):
    @classmethod
    def encode(cls, value: uuid.UUID) -> bytes:
        return value.bytes

    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding a UUID")
        return uuid.UUID(bytes=raw)


class MetadataResponse_v12(Response):
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", CompactArray(Int32)),
                        ("isr", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        ("topics", CompactArray(("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdsRequest(Request[MetadataRequest_v12]):
    """A metadata request for ``topics`` that answers their ids; never creates a topic."""

    API_KEY = 3

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = sorted(set(topics))

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        return request_struct_class([(NO_ID, name, {}) for name in self.topics], False, False, {})


async def topic_ids(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[str, str] | None:
    """The id of each of ``topics`` that exists now, asked of any broker through ``consumer``'s
    connections. None when the broker is too old to know topic ids; KafkaError when none answers."""
    client: Any = consumer._client  # aiokafka's client: its connections and version negotiation
    node = client.get_random_node()
    if node is None:
        await client.force_metadata_update()
        node = client.get_random_node()
        if node is None:
            raise KafkaError("no broker known to ask for topic ids")
    try:
        response = await client.send(node, TopicIdsRequest(topics))
    except (IncompatibleBrokerVersion, NotImplementedError):
        return None
    found = {}
    for error_code, name, topic_id, *_ in response.topics:
        if not error_code and topic_id != NO_ID and name:
            found[name] = str(topic_id)
    return found


class Incarnations:
    """Each topic's id as last read, and when: what a batch's positions are held against.

    A record below its partition's position is a duplicate only if its topic's id was read after
    the record was fetched (``verified``): a topic made again in between would otherwise pass for
    the one the position was recorded on. Ids are read every few seconds (``read``), and at once
    when a batch needs it; a broker without topic ids leaves positions as they are."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.read_at: dict[str, float] = {}  # topic -> when its id was last asked for (monotonic)
        self.supported = True
        self.watched = False  # set by a loop that reads the ids; without one, positions are taken as they are
        self.fetched = 0.0  # when the batch in hand was handed over (monotonic)

    def fetching(self) -> None:
        """A batch was just handed over by the consumer."""
        self.fetched = time.monotonic()

    def verified(self, topic: str) -> bool:
        return not (self.watched and self.supported) or self.read_at.get(topic, -math.inf) >= self.fetched

    @staticmethod
    async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
        """Have ``consumer`` read the cluster's metadata now (a topic made again is assigned again)."""
        client: Any = consumer._client
        await client.force_metadata_update()

    async def read(self, consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        """Read the ids of ``topics`` now; the topics whose id changed: topic -> (before, now)."""
        topics = list(topics)
        asked = time.monotonic()
        found = await topic_ids(consumer, topics)
        if found is None:
            if self.supported:
                log.warning(
                    "the broker does not give topic ids (Kafka 3.1 or later does): a topic deleted and made "
                    "again is not told apart from the one it replaced"
                )
            self.supported = False
            return {}
        changed = {t: (self.ids.get(t), found[t]) for t in found if self.ids.get(t) != found[t]}
        self.ids.update(found)
        for topic in topics:
            self.read_at[topic] = asked
        return changed
