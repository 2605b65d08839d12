"""Records the Kafka client cannot iterate: read them anyway, marked, so they can be dead-lettered.

Any producer may write a record whose header key is not UTF-8 (the protocol allows any bytes;
the Java and Python clients never write one). aiokafka decodes header keys strictly while it
iterates a fetched batch, so such a record raises inside ``getmany``; the position does not
move, the same batch is fetched again, and the consumer can never pass it.

``install()`` makes every aiokafka consumer in the process (ours and faust's) read such a batch
record by record instead: the fast C reader first, and from the record it cannot read, a
tolerant reader that decodes the offending header key with backslash escapes and adds the
header ``pokesaga.unreadable`` saying why. The participant loop dead-letters a record that
carries it (the readers skip it and count it); the records after it in the batch are read as
usual. Nothing is lost, nothing stops the partition.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import _DefaultRecordBatchPy, _DefaultRecordPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

UNREADABLE_HEADER = "pokesaga.unreadable"
_BATCH_PREFIX = struct.Struct(">qi")  # base offset, batch length: the first 12 bytes of every batch


def unreadable_reason(headers: Any) -> str | None:
    """Why the client could not read this record as written, or None when it could."""
    for key, value in headers or ():
        if key == UNREADABLE_HEADER:
            return (value or b"").decode("utf-8", "replace") or "unreadable"
    return None


def install() -> None:
    """Read unreadable records as marked records in every consumer of this process (idempotent)."""
    if fetcher.MemoryRecords is not _TolerantRecords:
        fetcher.MemoryRecords = _TolerantRecords


class _TolerantRecords:
    """A fetched partition's records: aiokafka's reader, with a tolerant one behind it."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._records = MemoryRecords(data)
        self._pos = 0

    def size_in_bytes(self) -> int:
        return self._records.size_in_bytes()

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._pos
        _, length = _BATCH_PREFIX.unpack_from(self._data, start)
        self._pos = start + _BATCH_PREFIX.size + length
        if batch.magic < 2:  # the old message formats have no headers
            return batch
        return _TolerantBatch(batch, self._data, start, self._pos)


class _TolerantBatch:
    """One record batch: iterated by aiokafka's reader until it raises, then by ``_read``."""

    def __init__(self, batch: Any, data: bytes, start: int, end: int) -> None:
        self._batch = batch
        self._span = (data, start, end)  # sliced only if the batch needs the tolerant reader
        self._rest: Iterator[Any] | None = None
        self._last_offset = -1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> _TolerantBatch:
        return self

    def __next__(self) -> Any:
        if self._rest is None:
            try:
                record = next(self._batch)
            except StopIteration:
                raise
            except (UnicodeDecodeError, CorruptRecordException, ValueError):
                data, start, end = self._span
                last = self._last_offset
                self._rest = (r for r in _read(bytes(data[start:end])) if r.offset > last)
            else:
                self._last_offset = record.offset
                return record
        return next(self._rest)


def _read(raw: bytes) -> Iterator[_DefaultRecordPy]:
    """Every record of a v2 batch; a header key that is not UTF-8 is escaped and marked."""
    batch = _DefaultRecordBatchPy(raw)
    iter(batch)  # decompresses
    buffer, pos = batch._buffer, batch._pos
    for _ in range(batch._num_records):
        record, pos = _read_record(batch, buffer, pos)
        yield record


def _read_record(batch: _DefaultRecordBatchPy, buffer: Any, pos: int) -> tuple[_DefaultRecordPy, int]:
    # The layout of aiokafka's own reader (DefaultRecordBatch._read_msg), tolerant of header keys.
    length, pos = decode_varint(buffer, pos)
    end = pos + length
    _attributes, pos = decode_varint(buffer, pos)
    ts_delta, pos = decode_varint(buffer, pos)
    appended = batch.timestamp_type == batch.LOG_APPEND_TIME
    timestamp = batch.max_timestamp if appended else batch.first_timestamp + ts_delta
    offset_delta, pos = decode_varint(buffer, pos)
    key, pos = _nullable_bytes(buffer, pos)
    value, pos = _nullable_bytes(buffer, pos)
    count, pos = decode_varint(buffer, pos)
    headers: list[tuple[str, bytes | None]] = []
    problems: list[str] = []
    for index in range(max(count, 0)):
        key_len, pos = decode_varint(buffer, pos)
        raw_key = bytes(buffer[pos : pos + max(key_len, 0)])
        pos += max(key_len, 0)
        try:
            header_key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            header_key = raw_key.decode("utf-8", "backslashreplace")
            problems.append(f"header key {index} is not UTF-8 ({header_key[:60]})")
        header_value, pos = _nullable_bytes(buffer, pos)
        headers.append((header_key, header_value))
    if pos != end or count < 0:
        problems.append("malformed record")
    if problems:
        headers.append((UNREADABLE_HEADER, "; ".join(problems).encode()))
    record = _DefaultRecordPy(batch.base_offset + offset_delta, timestamp, batch.timestamp_type, key, value, headers)
    return record, end


def _nullable_bytes(buffer: Any, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buffer, pos)
    if length < 0:
        return None, pos
    return bytes(buffer[pos : pos + length]), pos + length
