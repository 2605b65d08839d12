"""A dead letter's copy of a record: our headers are ours, whatever the record came with."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from engine.wire.deadletter import (
    DLQ_HEADER_PREFIX,
    REASON_HEADER,
    REPUBLISHED_HEADER,
    dead_letter_row,
    is_republish_marker,
)

pytestmark = pytest.mark.no_database


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def test_a_record_claiming_our_headers_is_dead_lettered_with_ours_only() -> None:
    """A client's record carrying ``pokesaga.dlq.replayed`` (or a reason of its own) would make its
    dead letter a republish marker — listed by no one, hiding the letter it names."""
    claimed = [(REPUBLISHED_HEADER, b"0@0"), (REASON_HEADER, b"nothing to see"), ("traceparent", b"00-x")]
    record = _Record("capture.status", 0, 7, 0, b"saga-1", b"", claimed)
    row = dead_letter_row("status", record, "not_cloudevent: empty", max_bytes=1_000_000)
    headers = dict(row["headers"])
    assert REPUBLISHED_HEADER not in headers and headers[REASON_HEADER] == "not_cloudevent: empty"
    assert headers[DLQ_HEADER_PREFIX + "reserved-headers-dropped"] == "2" and headers["traceparent"] == "00-x"
    written = [(k, v.encode()) for k, v in row["headers"]]
    assert not is_republish_marker(written, row["value"])


def test_only_an_empty_record_with_our_marker_and_no_reason_is_a_marker() -> None:
    assert is_republish_marker([(REPUBLISHED_HEADER, b"0@1")], b"")
    assert not is_republish_marker([(REPUBLISHED_HEADER, b"0@1")], b"{}")
    assert not is_republish_marker([(REPUBLISHED_HEADER, b"0@1"), (REASON_HEADER, b"r")], b"")
    assert not is_republish_marker([("other", b"0@1")], b"")
