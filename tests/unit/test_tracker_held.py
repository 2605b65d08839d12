"""The timelines the tracker holds: a finished saga packed and read back the same, a running one
kept as it is, each changed saga's changelog record written once at the commit, and what the
retention sweep reads from the index equal to what the timelines say; how stale what it read is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from capture import tracking as timeline
from engine.tracker.changelog import ValueCodec
from engine.tracker.figures import Freshness
from engine.tracker.held import Held, Live, pack, unpack
from engine.tracker.index import Index, Search
from tests.unit.test_console import BROKE_FREE, DELIVERED, POPULATION, STUCK_AFTER, T0, indexed, saga

pytestmark = pytest.mark.no_database


class Table:
    """The few things ``Held`` asks of the tracker's table: its memory (``data``), its keys, and
    sending a changelog record (kept here, as the partition, key and value bytes)."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.sent: list[tuple[int | None, Any, bytes | None]] = []

    def keys(self) -> Any:
        return self.data.keys()

    def send_changelog(self, partition: int | None, key: Any, value: Any, value_serializer: str = "") -> None:
        assert value_serializer == "raw"
        self.sent.append((partition, key, value))


def held() -> tuple[Held, Table]:
    table = Table()
    return Held(table, lambda stored, key: timeline.restore(stored, key)), table  # type: ignore[arg-type]


def test_a_finished_saga_is_held_packed_and_reads_back_as_the_timeline_it_was() -> None:
    store, table = held()
    for t in POPULATION:
        store.put(t["saga_id"], t, 1)
    for t in POPULATION:
        kept = table.data[t["saga_id"]]
        assert isinstance(kept, bytes) if t["outcome"] else isinstance(kept, Live)
        assert store.get(t["saga_id"]) == t == timeline.restore(json.loads(json.dumps(t)))
    assert unpack(pack(POPULATION[0])) == POPULATION[0]


def test_a_running_saga_is_changed_where_it_is_held_and_packed_once_it_has_an_outcome() -> None:
    store, table = held()
    first = saga("s", DELIVERED[:2], T0)
    store.put("s", first, 2)
    current = store.get("s")
    assert current is table.data["s"]  # the held dict itself: no copy per record while it runs
    whole = saga("s", DELIVERED, T0)
    for entry in whole["events"][2:]:
        assert timeline.add(current, {**entry, "saga_id": "s"}, entry["seen_at"])
    store.put("s", current, 2)
    assert isinstance(table.data["s"], bytes) and store.get("s") == whole


def test_each_changed_saga_is_written_once_at_the_commit_with_its_latest_timeline() -> None:
    store, table = held()
    running = saga("a", BROKE_FREE[:3], T0)
    store.put("a", running, 0)
    store.put("b", saga("b", DELIVERED, T0), 1)
    store.put("a", saga("a", BROKE_FREE, T0), 0)  # changed again before the commit
    assert table.sent == []
    assert store.write() == 2
    codec = ValueCodec()
    written = {key: (partition, codec._loads(value)) for partition, key, value in table.sent if value is not None}
    assert written == {"a": (0, saga("a", BROKE_FREE, T0)), "b": (1, saga("b", DELIVERED, T0))}
    assert store.write() == 0  # nothing changed since
    store.put("b", store.get("b"), 1)
    store.forget("b")  # forgotten before the commit: its tombstone only
    assert store.write() == 0 and table.sent[-1] == (1, "b", None) and "b" not in table.data


def test_a_timeline_recovered_from_the_changelog_is_restored_once_then_held_as_the_trackers_own() -> None:
    store, table = held()
    stored = json.loads(json.dumps(saga("r", DELIVERED, T0)))
    stored["events"][0]["service"] = "x" * 1000  # anyone writes the changelog: restored, bounded
    table.data["r"] = stored
    found = store.get("r")
    assert found == timeline.restore(stored, "r") and isinstance(table.data["r"], bytes)
    assert store.get("r") == found


def test_the_index_says_when_each_saga_settled_as_its_timeline_does() -> None:
    index = indexed(POPULATION)
    for t in POPULATION:
        assert index.rows[t["saga_id"]].settled == timeline.settled_at(t)
    now = T0 + 240 + STUCK_AFTER
    assert {k for k, r in index.rows.items() if r.settled is not None and now - r.settled > 100} == {
        t["saga_id"] for t in POPULATION if timeline.expired(t, now, 100)
    }


def test_the_staleness_is_from_the_last_records_timestamp_to_when_it_was_read() -> None:
    fresh = Freshness()
    assert fresh.figures() == {"records": 0, "staleness_s": None, "read_at": None}
    fresh.read(T0, T0 + 2.5)
    fresh.read(None, T0 + 3)  # no timestamp: counted, the staleness stays the last one known
    assert fresh.figures() == {"records": 2, "staleness_s": 2.5, "read_at": T0 + 3}
    fresh.read(T0 + 100, T0 + 4)  # written "later" than read (any client writes any timestamp)
    assert fresh.staleness == 0.0


def test_a_row_made_once_after_several_records_reads_as_if_made_at_each() -> None:
    step_by_step, at_once = Index(timeline.TIMELINES, STUCK_AFTER), Index(timeline.TIMELINES, STUCK_AFTER)
    whole = saga("m", BROKE_FREE, T0)
    for n in range(1, len(BROKE_FREE) + 1):
        part = saga("m", BROKE_FREE[:n], T0)
        step_by_step.put(part, part["events"][n - 1 :])
        step_by_step.overview(T0 + n)  # read between records: the row made each time
        at_once.put(part, part["events"][n - 1 :])
    assert at_once.pending and at_once.overview(T0 + 9) == step_by_step.overview(T0 + 9)
    assert at_once.rows == step_by_step.rows == indexed([whole]).rows and not at_once.pending
    at_once.put(saga("n", DELIVERED[:2], T0))
    at_once.forget("n")  # forgotten before its row was made: none made
    assert "n" not in at_once.rows and at_once.search(Search(), T0 + 9)["count"] == 1
