"""Dead letters as they are on the topics: the dead-letter topic of a topic, and the copy of a
refused record with the headers that say why (``pokesaga.dlq.*``). Listing and republishing them
is an operator's tool (engine.ops.deadletters)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.wire.record import Record
from engine.wire.text import printable

DLQ_SUFFIX = ".dlq"
DLQ_HEADER_PREFIX = "pokesaga.dlq."
REASON_HEADER = DLQ_HEADER_PREFIX + "reason"
REPUBLISHED_HEADER = DLQ_HEADER_PREFIX + "replayed"  # a republish marker: partition@offset of the letter re-published
ATTEMPTS_HEADER = DLQ_HEADER_PREFIX + "attempts"  # how many times the record was tried, when it was
RECORD_OVERHEAD = 512  # bytes a record costs beyond its key, value and headers, generously
MAX_REASON = 1000  # what a dead letter keeps of why


def dead_letters(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic + DLQ_SUFFIX


def dlq_topic(topic: str) -> str:
    """Accepts a topic (``orders.pay``) or its dead-letter topic (``orders.pay.dlq``)."""
    return topic if topic.endswith(DLQ_SUFFIX) else dead_letters(topic)


def is_republish_marker(headers: Any, value: bytes | None = b"") -> bool:
    """Whether a record of a dead-letter topic is a republish marker, not a dead letter: an empty
    value, our marker header, no reason. (A dead letter never carries the marker header: the
    headers of ours a refused record came with are dropped from its copy.)"""
    keys = [k for k, _ in headers or ()]
    return not value and REPUBLISHED_HEADER in keys and REASON_HEADER not in keys


def dead_letter_row(
    participant: str, record: Record, reason: str, max_bytes: int, attempts: int | None = None
) -> dict[str, Any]:
    """The dead-letter copy of ``record``: its key, value and headers, and ours saying why (and,
    for a record that was tried, ``pokesaga.dlq.attempts``: how many times).

    It always fits in ``max_bytes``: a copy that would not keeps the head of the value and
    says so (``pokesaga.dlq.truncated``: the original size)."""
    headers = [[printable(k, 200), printable((v or b"").decode("utf-8", "replace"), 4000)] for k, v in record.headers]
    reserved = [h for h in headers if h[0].startswith(DLQ_HEADER_PREFIX)]  # ours are ours: a client's are dropped
    headers = [h for h in headers if not h[0].startswith(DLQ_HEADER_PREFIX)]
    ours = [
        [REASON_HEADER, printable(reason, MAX_REASON)],
        [DLQ_HEADER_PREFIX + "topic", record.topic],
        [DLQ_HEADER_PREFIX + "partition", str(record.partition)],
        [DLQ_HEADER_PREFIX + "offset", str(record.offset)],
        [DLQ_HEADER_PREFIX + "consumer", participant],
    ]
    if attempts is not None:
        ours.append([ATTEMPTS_HEADER, str(attempts)])
    if reserved:
        ours.append([DLQ_HEADER_PREFIX + "reserved-headers-dropped", str(len(reserved))])
    key = record.key[:1000] if record.key is not None else None
    value = record.value if record.value is not None else b""
    room = max_bytes - RECORD_OVERHEAD - len(key or b"") - headers_size(ours)
    if headers_size(headers) > room // 2:
        headers = []  # pathological headers are not worth the value: keep the value
        ours.append([DLQ_HEADER_PREFIX + "headers-dropped", str(len(record.headers or ()))])
    room -= headers_size(headers) + 100
    if len(value) > room:
        ours.append([DLQ_HEADER_PREFIX + "truncated", str(len(value))])
        value = value[: max(room, 0)]
    return {
        "producer": participant,
        "event_id": None,
        "topic": dead_letters(record.topic),
        "key": key,
        "value": value,
        "headers": headers + ours,
    }


def headers_size(headers: Sequence[Sequence[str]]) -> int:
    return sum(len(k.encode()) + len(v.encode()) + 8 for k, v in headers)
