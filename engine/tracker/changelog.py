"""The tracker's table, read back from its changelog with care.

The changelog (``pokesaga-tracker-sagas-changelog``) is a topic like any other: any client can
write anything to it. faust recovers a table by decoding each record with the table's codecs and
applying the decoded records in batches; a record whose key does not decode is lost to recovery
(and if it is a partition's last, recovery waits for it for ever), and one whose key decodes to
something a table cannot hold (a JSON object: unhashable) makes the batch fail, and faust keeps
the failed batch and tries it again at every flush: recovery never ends, the tracker never
serves.

So the table reads its changelog through codecs that never fail: a key is a saga id (a JSON
string ``bad_saga_id`` accepts), a value a JSON object (a timeline, which ``timeline.restore``
makes usable whatever it holds) or a tombstone; anything else decodes to ``Unfit``, and the table
applies a batch without those records and counts each in
``pokesaga_tracker_changelog_entries_skipped_total{reason}`` (once per record, however often a
rebalance makes the tracker read its changelog again). They write what faust's own JSON codec
writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faust
from faust.serializers import codecs
from faust.types import TP, EventT
from prometheus_client import Counter

from engine.observe.timeline import bad_saga_id

REASONS = (
    "bad_key",  # not JSON, or JSON that is no saga id (an object, a number, a string with control characters)
    "bad_value",  # not JSON, or JSON that is no object
)

skipped = Counter(
    "pokesaga_tracker_changelog_entries_skipped_total",
    "Records of the tracker's changelog it skipped when it recovered its table, by reason",
    ["reason"],
)
for _reason in REASONS:
    skipped.labels(_reason)  # served from the start, at 0


@dataclass(frozen=True, slots=True)
class Unfit:
    """What a changelog record's key or value decodes to when no table entry can be made of it."""

    reason: str


BAD_KEY, BAD_VALUE = Unfit("bad_key"), Unfit("bad_value")


def _json(data: bytes) -> Any:
    """``data`` as JSON, or BAD_VALUE (a marker: no JSON document decodes to it)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
        return BAD_VALUE


class KeyCodec(codecs.json):
    """A changelog key: a saga id, else BAD_KEY. Never raises."""

    def _loads(self, s: bytes) -> Any:
        key = _json(s)
        return key if isinstance(key, str) and bad_saga_id(key) is None else BAD_KEY


class ValueCodec(codecs.json):
    """A changelog value: a JSON object, else BAD_VALUE. Never raises (a tombstone is no value:
    faust does not decode it)."""

    def _loads(self, s: bytes) -> Any:
        value = _json(s)
        # "__faust" would have faust rebuild a model from it (and fail): no timeline has that field
        return value if isinstance(value, dict) and "__faust" not in value else BAD_VALUE


def unfit(event: EventT) -> str | None:
    """Why a changelog record read back makes no table entry, or None."""
    if not isinstance(event.key, str):  # no key (faust decodes none), or BAD_KEY
        return "bad_key"
    return event.value.reason if isinstance(event.value, Unfit) else None


class SagaTable(faust.Table):
    """faust's table, whose changelog records are read back with ``KeyCodec`` and ``ValueCodec``,
    and applied without those that make no entry (counted, once per record)."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.key_serializer = KeyCodec()
        self.value_serializer = ValueCodec()
        self._counted: dict[TP, int] = {}  # per changelog partition, the last offset counted

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        fit = []
        for event in batch:
            reason = unfit(event)
            if reason is None:
                fit.append(event)
                continue
            message = event.message
            if message.offset > self._counted.get(message.tp, -1):
                self._counted[message.tp] = message.offset
                skipped.labels(reason).inc()
        super().apply_changelog_batch(fit)
