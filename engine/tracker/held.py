"""The timelines the tracker holds, in its table, and their changelog records, written at the commit.

A saga that may still change (no outcome yet) is held as its timeline, a dict; a saga with an
outcome as the compressed JSON of that timeline (zlib: ~600 bytes for a five-event saga, against
~3.8 KB of dicts and strings), read back when it is asked for or changes again. A timeline the
table recovered from the changelog (a JSON object anyone may have written) goes through
``timeline.restore`` once, then is held the same way.

A saga's changelog record is written once per commit, whatever number of its records the commit
covers: each change marks the saga, and the marked sagas are written when faust starts a commit
(``Sensor.on_commit_initiated``), before it flushes its producer and commits the source offsets. So
no offset is committed before the timeline it made is in the changelog, as when every change was
written at once; a tracker that stops before the commit reads those records again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import faust

from engine.tracker.changelog import SagaTable

Restore = Callable[[Any, Any], dict[str, Any]]  # (stored value, key) -> a usable timeline


def pack(timeline: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(timeline, separators=(",", ":")).encode(), 1)


def unpack(packed: bytes) -> dict[str, Any]:
    """A timeline ``pack`` made (only the tracker writes its table's memory): no check needed."""
    found: dict[str, Any] = json.loads(zlib.decompress(packed))
    return found


class Held:
    """The table's timelines: read (``get``), changed (``put``), forgotten (``forget``), and the
    changed ones written to the changelog (``write``)."""

    def __init__(self, table: SagaTable, restore: Restore) -> None:
        self.table = table
        self.restore = restore
        self.marked: dict[Any, int] = {}  # saga -> the changelog partition its next record goes to
        self.partition_of: dict[Any, int] = {}  # saga -> the changelog partition it was last written to

    def get(self, key: Any) -> dict[str, Any]:
        """The saga's timeline (a new, empty one when the table holds none). A running saga's is
        the held dict itself: change it, then ``put`` it."""
        stored = self.table.data.get(key)
        if isinstance(stored, bytes):
            found = unpack(stored)
            found["saga_id"] = key  # the same text: one string for the table, the index and the timeline
            return found
        if isinstance(stored, Live):
            return stored
        found = self.restore(stored, key)
        if stored is None:  # an id asked for and never seen: nothing held
            return found
        held = self.table.data[key] = self.held_form(found)  # recovered: held from now on as its own
        return held if isinstance(held, Live) else found

    def put(self, key: Any, timeline: dict[str, Any], partition: int) -> dict[str, Any]:
        """``timeline`` held for ``key``, its changelog record written at the next commit; returns
        what ``get`` would."""
        held = self.table.data[key] = self.held_form(timeline)
        self.marked[key] = partition
        self.partition_of[key] = partition
        return held if isinstance(held, Live) else timeline

    @staticmethod
    def held_form(timeline: dict[str, Any]) -> Live | bytes:
        if timeline["outcome"] is None:
            return timeline if isinstance(timeline, Live) else Live(timeline)
        return pack(timeline)

    def forget(self, key: Any) -> None:
        """``key`` gone from the table and the changelog (a tombstone, on the partition its timeline
        was written to, or that faust's store recovered it from), as ``del table[key]`` does."""
        recovered: dict[Any, int] = getattr(self.table.data, "_key_partition", {})
        partition = self.partition_of.pop(key, None)
        if partition is None:
            partition = recovered.get(key)
        self.marked.pop(key, None)
        self.table.send_changelog(partition, key, None, value_serializer="raw")
        self.table.data.pop(key, None)
        recovered.pop(key, None)

    def write(self) -> int:
        """The marked sagas' changelog records sent to faust's producer; returns how many."""
        marked, self.marked = self.marked, {}
        data = self.table.data
        for key, partition in marked.items():
            stored = data.get(key)
            if isinstance(stored, bytes):
                value = zlib.decompress(stored)
            elif isinstance(stored, dict):
                value = json.dumps(stored, separators=(",", ":")).encode()
            else:
                continue  # forgotten since
            self.table.send_changelog(partition, key, value, value_serializer="raw")
        return len(marked)

    def moved_away(self) -> None:
        """Partitions a rebalance gave another tracker: their sagas' partitions are not kept."""
        for key in self.partition_of.keys() - set(self.table.keys()):
            del self.partition_of[key]


class Live(dict[str, Any]):
    """A held timeline that may still change (no outcome): kept as it is, not packed."""

    __slots__ = ()


class WriteAtCommit(faust.Sensor):
    """Writes the marked timelines as faust starts a commit, before it flushes its producer."""

    def __init__(self, held: Held) -> None:
        super().__init__()
        self.held = held

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.held.write()
        return super().on_commit_initiated(consumer)
