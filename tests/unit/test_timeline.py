"""A saga's timeline from whatever is on the topics, and from whatever a table holds: total."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from contracts import topics
from contracts.events import EVENT_TYPES
from engine.unreadable import UNREADABLE_HEADER
from tests.hostile import encode, envelope, nested
from tracker import timeline
from tracker.timeline import MAX_EVENTS, REASONS, NotAnEvent

pytestmark = pytest.mark.no_database

NOW = 1_800_000_000.0


def event(saga: str, event_id: str, type_: str, cause: str | None = None, **changes: Any) -> dict[str, Any]:
    """An event as a service writes it (``changes`` override envelope fields, ``data`` merges)."""
    data: dict[str, Any] = {"trainer": {"name": "Ash"}, "pokemon": {"name": "Pidgey"}}
    if type_ not in ("PokemonEncountered",):
        data |= {"reason": "broke_free", "failed_step": "pokeball", "detail": "", "undone": ["combat"]}
    data |= changes.pop("data", {})
    doc = envelope(saga, event_id, type_, source="pokesaga/pokeball", data=data, **changes)
    if cause is not None:
        doc["causationid"] = cause
    return doc


def refused(value: bytes | None, topic: str = topics.STATUS, headers: Any = None) -> str:
    with pytest.raises(NotAnEvent) as caught:
        timeline.parse(value, topic, headers)
    assert caught.value.reason in REASONS
    return caught.value.reason


def test_an_event_is_placed_with_its_time_in_utc() -> None:
    doc = event("s", "e1", "PokemonEncountered", time="2026-11-23T12:00:00.5+02:00")
    entry = timeline.parse(encode(doc), topics.STATUS)
    assert entry["time"] == "2026-11-23T10:00:00.500000Z"
    assert (entry["trainer"], entry["pokemon"], entry["service"]) == ("Ash", "Pidgey", "pokeball")
    service_time = timeline.parse(
        encode(event("s", "e1", "PokemonEncountered", time="2026-11-23T04:39:57.267869Z")), topics.STATUS
    )
    assert service_time["time"] == "2026-11-23T04:39:57.267869Z"  # as the service wrote it


@pytest.mark.parametrize(
    ("value", "topic", "reason"),
    [
        (None, topics.STATUS, "empty"),
        (b"", topics.STATUS, "empty"),
        (bytes(range(256)), topics.STATUS, "not_json"),
        (nested(5000), topics.STATUS, "not_json"),
        (b"9" * 5000, topics.STATUS, "not_json"),  # beyond Python's integer digits limit
        (b"[1, 2]", topics.STATUS, "not_cloudevent"),
        (encode(event("s", "e", "PokemonEncountered", time=12345)), topics.STATUS, "not_cloudevent"),
        (encode(event("s", "e", "PokemonEncountered", time="yesterday")), topics.STATUS, "not_cloudevent"),
        (encode(event("s", "e", "PokemonEncountered", time=None) | {"time": [1]}), topics.STATUS, "not_cloudevent"),
        (encode(event("s" * 5000, "e", "PokemonEncountered")), topics.STATUS, "not_cloudevent"),
        (encode(event("s", "e", "PokemonEncountered", sagaid=7)), topics.STATUS, "not_cloudevent"),
        (encode(event("s", "e", "TeamRocketAttacked")), topics.STATUS, "unknown_type"),
        (encode(event("s", "e", "PokemonEncountered")), topics.OUTCOMES, "wrong_topic"),
        (encode(event("s", "e", "CaptureFailed", data={"reason": 42})), topics.OUTCOMES, "invalid_data"),
        (encode(event("s", "e", "CaptureFailed", data={"undone": "everything"})), topics.OUTCOMES, "invalid_data"),
        (encode(event("s", "e", "CaptureFailed", data={"detail": "x" * 100_000})), topics.OUTCOMES, "invalid_data"),
        (encode(event("s", "e", "PokemonEncountered", data={"trainer": "Ash"})), topics.STATUS, "invalid_data"),
    ],
)
def test_a_record_the_services_would_refuse_is_not_an_event(value: bytes | None, topic: str, reason: str) -> None:
    assert refused(value, topic) == reason


def test_a_record_the_client_could_not_read_is_not_an_event_whatever_it_holds() -> None:
    valid = encode(event("s", "e", "PokemonEncountered"))
    marked = [("fine", b"1"), ("x\\xff", b"v"), (UNREADABLE_HEADER, b"header key 1 is not UTF-8")]
    assert refused(valid, headers=marked) == "unreadable"
    assert refused(valid, headers={UNREADABLE_HEADER: None}) == "unreadable"
    # Headers of any other shape say nothing; the value decides.
    for headers in (None, [], [("k", None)], [("only-one",)], "junk", 7):
        assert timeline.parse(valid, topics.STATUS, headers)["id"] == "e"


def build(*docs: dict[str, Any]) -> dict[str, Any]:
    """The timeline of ``docs``, each read from its own topic."""
    found = timeline.new(docs[0]["sagaid"])
    for seen, doc in enumerate(docs):
        timeline.add(found, timeline.parse(encode(doc), EVENT_TYPES[doc["type"]].topic), NOW + seen)
    return found


def test_a_cycle_of_causes_keeps_every_event_once() -> None:
    forged = build(
        event("s", "a", "PokemonBrokeFree", cause="b", time="2026-11-23T10:00:01Z"),
        event("s", "b", "PokemonHealed", cause="a", time="2026-11-23T10:00:00Z"),
        event("s", "c", "PokemonHealed", cause="c"),
    )
    assert sorted(e["id"] for e in forged["events"]) == ["a", "b", "c"]
    assert timeline.view(forged, NOW, 60)["state"] == "compensating"


def test_a_saga_takes_so_many_events_and_no_more() -> None:
    found = timeline.new("s")
    for i in range(MAX_EVENTS):
        assert timeline.add(found, timeline.parse(encode(event("s", f"e{i}", "PokemonHealed")), topics.FAILURES), NOW)
    with pytest.raises(NotAnEvent) as caught:
        timeline.add(found, timeline.parse(encode(event("s", "more", "PokemonHealed")), topics.FAILURES), NOW)
    assert caught.value.reason == "too_many_events"
    again = timeline.parse(encode(event("s", "e0", "PokemonHealed")), topics.FAILURES)
    assert timeline.add(found, again, NOW) is False  # a repeat is still a repeat


def test_a_timeline_comes_back_from_the_table_equal() -> None:
    built = build(
        event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"),
        event("s", "out", "CaptureFailed", cause="start", time="2026-11-23T10:00:00.25Z"),
    )
    stored = json.loads(json.dumps(built))
    assert timeline.restore(stored, "s") == built
    assert timeline.view(stored, NOW, 60)["duration_ms"] == 250.0


def older(**changes: Any) -> dict[str, Any]:
    """A timeline as an older tracker stored it: the fields as the client wrote them."""
    stored: dict[str, Any] = {
        "saga_id": "old", "trainer": "Ash", "pokemon": "Mew", "started_at": 12345, "ended_at": None,
        "outcome": None,
        "events": [
            {"id": "e1", "type": "PokemonEncountered", "service": "x", "topic": topics.STATUS, "time": 12345,
             "causation": None, "seen_at": NOW},
            {"id": "e2", "type": "PokemonParalyzed", "service": "status", "topic": topics.COMBAT,
             "time": "2026-11-23T10:00:00Z", "causation": "e1", "seen_at": NOW + 1},
        ],
    }  # fmt: skip
    stored.update(changes)
    return stored


def test_a_timeline_an_older_tracker_stored_with_a_numeric_time_is_viewed_and_listed() -> None:
    view = timeline.view(older(), NOW + 2, 60)
    assert view["started_at"] is None and view["events"][0]["time"] is None
    assert [e["id"] for e in view["events"]] == ["e1", "e2"]
    assert view["state"] == "running" and view["waiting_on"] == "combat" and view["duration_ms"] is None
    json.dumps(view, allow_nan=False)
    listed = timeline.newest_first(
        [
            view,
            timeline.view(older(saga_id="new", started_at="2026-11-24T00:00:00Z"), NOW, 60),
            timeline.view(older(saga_id="mid", started_at="2026-11-23T12:00:00+01:00"), NOW, 60),
        ]
    )
    assert [v["saga_id"] for v in listed] == ["new", "mid", "old"]


HUGE = "x" * 1_000_000


@pytest.mark.parametrize(
    "stored",
    [
        None,
        7,
        "a string",
        [],
        {},
        {"events": "not a list"},
        older(saga_id=None, trainer=["Ash"], pokemon={"name": "Mew"}, outcome=["CaptureFailed"], ended_at=math.inf),
        older(outcome="Exploded", started_at="2026-02-30T10:00:00Z", ended_at="9999-12-31T23:59:59-01:00"),
        older(saga_id=HUGE, trainer=HUGE, started_at=HUGE, events=[{"id": HUGE, "type": HUGE, "time": HUGE}]),
        older(events=[None, 1, "e", [], {"id": 1, "type": "T"}, {"id": "x"}, {"id": "", "type": "T"}]),
        older(
            events=[
                {
                    "id": "a",
                    "type": "CaptureFailed",
                    "time": "0001-01-01T00:00:00+01:00",
                    "seen_at": "yesterday",
                    "service": 3,
                    "topic": None,
                    "causation": ["a"],
                    "reason": {"why": 1},
                    "failed_step": 4,
                    "detail": HUGE,
                    "undone": [1, None, "combat", HUGE, "\x00"],
                },
                {"id": "a", "type": "PokemonDelivered", "seen_at": math.nan},
                {"id": "b", "type": "PokemonHealed", "causation": "b", "seen_at": 10**400, "undone": "combat"},
                {"id": "c", "type": "PokemonHealed", "causation": "b", "seen_at": True, "time": -1.5},
            ],
            outcome="CaptureFailed",
        ),
        older(events=[{"id": f"e{i}", "type": "PokemonHealed"} for i in range(10 * MAX_EVENTS)]),
    ],
)
def test_whatever_a_table_holds_is_viewed_with_every_field_bounded(stored: Any) -> None:
    view = timeline.view(stored, NOW, 60, key=b"key")
    assert view["saga_id"] in ("old", "key") or view["saga_id"] == HUGE[: timeline.MAX_ID]
    assert view["state"] in timeline.STATES
    for field in ("trainer", "pokemon"):
        assert view[field] is None or (isinstance(view[field], str) and len(view[field]) <= timeline.MAX_NAME)
    for field in ("started_at", "ended_at"):
        assert view[field] is None or timeline.rfc3339(view[field]) == view[field]
    assert view["outcome"] in (None, *timeline.OUTCOMES)
    assert len(view["events"]) <= MAX_EVENTS
    assert len({e["id"] for e in view["events"]}) == len(view["events"])
    for e in view["events"]:
        assert isinstance(e["id"], str) and 0 < len(e["id"]) <= timeline.MAX_ID
        assert isinstance(e["type"], str) and 0 < len(e["type"]) <= timeline.MAX_TYPE
        assert e["time"] is None or timeline.rfc3339(e["time"]) == e["time"]
        assert isinstance(e["seen_at"], float) and math.isfinite(e["seen_at"])
        for text in ("service", "topic", "causation", "reason", "failed_step", "detail"):
            assert e.get(text) is None or (isinstance(e[text], str) and len(e[text]) <= timeline.MAX_DETAIL)
        undone = e.get("undone", [])
        assert isinstance(undone, list) and all(isinstance(s, str) and len(s) <= 20 for s in undone)
    json.dumps(view, allow_nan=False)  # served as JSON as it is
    assert timeline.restore(view, b"key") == timeline.restore(stored, b"key")  # normalised once is enough
    timeline.newest_first([view, timeline.view(older(), NOW, 60)])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23T10:00:00Z", "2026-11-23T10:00:00Z"),
        ("2026-11-23t10:00:00.123456789z", "2026-11-23T10:00:00.123456Z"),
        ("2026-11-23 12:00:00+02:00", "2026-11-23T10:00:00Z"),
        ("2026-11-23T10:00:00", "2026-11-23T10:00:00Z"),  # no offset: UTC
        ("2026-11-23T10:00:00-23:59", "2026-11-24T09:59:00Z"),
        ("2026-11-23T10:00:00+24:00", None),
        ("2026-11-23T10:00:60Z", None),
        ("2026-02-30T10:00:00Z", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("9999-12-31T23:59:59-01:00", None),
        ("2026-11-23", None),
        ("12345", None),
        ("yesterday", None),
        ("２０２６-11-23T10:00:00Z", None),  # fullwidth digits
        ("2026-11-23T10:00:00Z" + " " * 100, None),
        (12345, None),
        (1.5, None),
        (None, None),
        (True, None),
        (["2026-11-23T10:00:00Z"], None),
    ],
)
def test_a_time_is_rfc_3339_in_utc_or_none(value: Any, expected: str | None) -> None:
    assert timeline.rfc3339(value) == expected
    assert (timeline.instant(expected) == -math.inf) is (expected is None)


def test_a_finished_saga_expires_a_retention_after_its_outcome_and_a_running_one_never() -> None:
    start = event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z")
    outcome = event("s", "out", "CaptureFailed", cause="start", time="2026-11-23T10:00:01Z")
    ended = timeline.instant("2026-11-23T10:00:01Z")
    finished, running = build(start, outcome), build(start)
    assert timeline.settled_at(finished) == ended and timeline.settled_at(running) is None
    assert not timeline.expired(finished, ended + 3600, 3600) and timeline.expired(finished, ended + 3601, 3600)
    assert not timeline.expired(running, NOW + 10**9, 3600)


def test_an_outcome_written_in_the_future_keeps_its_saga_no_longer_than_when_it_was_seen() -> None:
    future = build(
        event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"),
        event("s", "out", "CaptureFailed", cause="start", time="2999-01-01T00:00:00Z"),
    )
    assert timeline.settled_at(future) == NOW + 1  # when the tracker saw the outcome
    assert timeline.expired(future, NOW + 1 + 3601, 3600)


def test_events_of_a_forgotten_saga_published_again_settle_at_their_own_time() -> None:
    fragment = build(event("s", "healed", "PokemonHealed", time="2026-11-23T10:00:00Z"))  # no start event
    assert timeline.settled_at(fragment) == timeline.instant("2026-11-23T10:00:00Z")
    assert timeline.expired(fragment, NOW, 3600)
