"""Dead letters: list what is in ``<topic>.dlq``, and **republish** it to its source topic (the
command ``pokesaga dlq replay``; not to be confused with a reset of offsets, engine.ops.offsets, or
a rebuild, engine.worker.rebuild).

Republishing keeps its place in the consumer group ``pokesaga.dlq-replay``, so a dead letter is
re-published once, however often it runs; the services' inboxes absorb a repeat anyway. A
republish that selects (``--saga``, ``--reason``) moves that place only up to the first dead letter
it leaves, and marks each one it re-publishes beyond it with a **republish marker** (a record on the
same dead-letter partition, header ``pokesaga.dlq.replayed``: partition@offset of the letter, value
empty): a dead letter left by one selection is still there for the next, and one re-published is
never re-published again. Markers are not dead letters: listing, republishing and the tracker pass
them by. (The group's and the headers' names on the brokers keep the command's word, "replay":
renamed, a republish would no longer see what earlier ones did.)

A dead-letter topic is a topic like any other: any client can write anything to it. Every
record in it is listed, whatever its key, value and headers (null values, header keys that are
not UTF-8, no pokesaga headers at all); what our headers say is shown cut short and printable,
and a republish goes to the dead-letter topic's own source topic, with the record's key as it was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition

from engine.broker import kafka
from engine.wire.deadletter import (
    DLQ_HEADER_PREFIX,
    DLQ_SUFFIX,
    MAX_REASON,
    REPUBLISHED_HEADER,
    dlq_topic,
    is_republish_marker,
)
from engine.wire.text import printable

REPUBLISH_GROUP = "pokesaga.dlq-replay"


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: str | None  # decoded for people; ``raw_key`` is what is re-published
    reason: str
    source: str
    value: bytes
    headers: tuple[tuple[str, bytes | None], ...]
    # One record, however many groups refused it: its source topic, partition and offset, and a
    # digest of its key and value (offsets start over when a topic is made again).
    origin: tuple[str, str, str, str]
    raw_key: bytes | None

    def as_dict(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "reason": self.reason,
            "source": self.source,
            "value": self.value.decode("utf-8", "replace"),
        }


def _dead_letter(record: ConsumerRecord[bytes, bytes], dlq: str) -> DeadLetter:
    pairs = [(str(k), v if isinstance(v, bytes) else None) for k, v in record.headers or ()]
    ours = {k: printable((v or b"").decode("utf-8", "replace"), MAX_REASON) for k, v in pairs}
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key is not None else None,
        reason=ours.get(DLQ_HEADER_PREFIX + "reason") or "(no reason recorded)",
        # Where the record came from, and so where a republish sends it: the topic this is the
        # dead-letter topic of, whatever a header says (a forged one would pick any topic).
        source=dlq.removesuffix(DLQ_SUFFIX),
        value=record.value or b"",
        headers=tuple((k, v) for k, v in pairs if not k.startswith(DLQ_HEADER_PREFIX)),
        origin=(
            ours.get(DLQ_HEADER_PREFIX + "topic", ""),
            ours.get(DLQ_HEADER_PREFIX + "partition", ""),
            ours.get(DLQ_HEADER_PREFIX + "offset", f"dlq:{record.partition}:{record.offset}"),
            _digest(record.key, record.value),
        ),
        raw_key=record.key,
    )


def _digest(key: bytes | None, value: bytes | None) -> str:
    """Which record this is, whatever its coordinates: its key and value, unambiguous."""
    key, value = key or b"", value or b""
    return hashlib.sha256(len(key).to_bytes(8, "big") + key + value).hexdigest()


def _marked(record: ConsumerRecord[bytes, bytes]) -> tuple[int, int] | None:
    """The (partition, offset) of the letter a republish marker says was re-published: only an
    earlier record of the marker's own partition (where a republish writes it)."""
    value = dict(record.headers or ()).get(REPUBLISHED_HEADER)
    partition, _, offset = (value or b"").decode("ascii", "replace").partition("@")
    if not (partition.isdigit() and offset.isdigit() and len(offset) < 20):
        return None
    named = (int(partition), int(offset))
    return named if named[0] == record.partition and named[1] < record.offset else None


async def _read(
    bootstrap: str, dlq: str, group: str | None
) -> tuple[list[DeadLetter], dict[TopicPartition, int], set[tuple[int, int]]]:
    """Dead letters from the group's position (or the start) to the end as it is now, the end,
    and the (partition, offset) of those a republish marker says were re-published already."""
    records, ends = await kafka.read_to_end(bootstrap, [dlq], group)
    letters = [_dead_letter(r, dlq) for r in records if not is_republish_marker(r.headers, r.value)]
    republished = {m for r in records if is_republish_marker(r.headers, r.value) and (m := _marked(r)) is not None}
    return sorted(letters, key=lambda d: (d.partition, d.offset)), ends, republished


async def list_dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    letters, _, _ = await _read(bootstrap, dlq_topic(topic), group=None)
    return letters


async def republish(
    bootstrap: str, topic: str, dry_run: bool = False, saga: str | None = None, reason: str | None = None
) -> list[DeadLetter]:
    """Re-publish the dead letters not re-published yet to their source topic; returns them.

    Each source record is re-published once, even when several consumer groups dead-lettered
    it. ``saga`` keeps only that key; ``reason`` only reasons containing that text. The republish
    position moves past what is re-published, up to the first dead letter left on each partition;
    what is re-published beyond it gets a republish marker: a later republish sees what was left, and
    never what was re-published.
    """
    dlq = dlq_topic(topic)
    found, ends, republished = await _read(bootstrap, dlq, group=REPUBLISH_GROUP)
    pending = [letter for letter in found if (letter.partition, letter.offset) not in republished]
    done = {letter.origin for letter in found if (letter.partition, letter.offset) in republished}
    chosen: dict[tuple[str, str, str, str], DeadLetter] = {}
    for letter in pending:
        if (
            letter.origin not in done
            and (saga is None or letter.key == saga)
            and (reason is None or reason in letter.reason)
        ):
            chosen.setdefault(letter.origin, letter)
    letters = list(chosen.values())
    if dry_run:
        return letters
    handled = set(chosen) | done  # a record dead-lettered by several groups: re-published once
    position = dict(ends)
    for letter in pending:  # sorted by partition and offset: the first one left holds the position
        tp = TopicPartition(dlq, letter.partition)
        if letter.origin not in handled and letter.offset < position[tp]:
            position[tp] = letter.offset
    marks = [
        letter
        for letter in pending
        if letter.origin in handled and letter.offset > position[TopicPartition(dlq, letter.partition)]
    ]
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        futures = [
            await producer.send(
                letter.source,
                letter.value,
                key=letter.raw_key,
                headers=[
                    *letter.headers,
                    ("pokesaga.replayed-from", f"{dlq}[{letter.partition}]@{letter.offset}".encode()),
                ],
            )
            for letter in letters
        ]
        for future in futures:
            await future
        # Marked only once re-published: a republish that dies in between re-publishes them again
        # (the services' inboxes absorb the repeat), never leaves one out.
        futures = [
            await producer.send(
                dlq,
                b"",
                key=letter.raw_key,
                partition=letter.partition,
                headers=[(REPUBLISHED_HEADER, f"{letter.partition}@{letter.offset}".encode())],
            )
            for letter in marks
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()
    await kafka.commit_offsets(bootstrap, REPUBLISH_GROUP, position)
    return letters
