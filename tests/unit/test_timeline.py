"""A saga's timeline from whatever is on the topics, and from whatever a table holds: total."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from capture import tracking as timeline
from capture.saga import CAPTURE
from capture.tracking import MAX_EVENTS, NOTICE, REASONS, NotAnEvent
from contracts import topics
from contracts.events import EVENT_TYPES
from engine.broker.unreadable import UNREADABLE_HEADER
from engine.retry import MAX_ATTEMPTS, RetryPolicy
from engine.wire import notices as retrynotice
from engine.wire.envelope import Envelope
from tests.hostile import encode, envelope, nested

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
        assert view[field] is None or timeline.canonical_rfc3339(view[field]) == view[field]
    assert view["outcome"] in (None, *timeline.OUTCOMES)
    assert len(view["events"]) <= MAX_EVENTS
    assert len({e["id"] for e in view["events"]}) == len(view["events"])
    for e in view["events"]:
        assert isinstance(e["id"], str) and 0 < len(e["id"]) <= timeline.MAX_ID
        assert isinstance(e["type"], str) and 0 < len(e["type"]) <= timeline.MAX_TYPE
        assert e["time"] is None or timeline.canonical_rfc3339(e["time"]) == e["time"]
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
    assert timeline.canonical_rfc3339(value) == expected
    assert (timeline.instant(expected) == -math.inf) is (expected is None)


def test_a_finished_saga_expires_a_retention_after_the_tracker_last_saw_it_and_a_running_one_never() -> None:
    start = event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z")
    outcome = event("s", "out", "CaptureFailed", cause="start", time="2026-11-23T10:00:01Z")
    finished, running = build(start, outcome), build(start)
    seen = NOW + 1  # when the tracker read the outcome: its own clock, not the outcome's time
    assert timeline.settled_at(finished) == seen and timeline.settled_at(running) is None
    assert not timeline.expired(finished, seen + 3600, 3600) and timeline.expired(finished, seen + 3601, 3600)
    assert not timeline.expired(running, NOW + 10**9, 3600)


@pytest.mark.parametrize("written", ["9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2026-11-23T10:00:00Z"])
def test_retention_runs_on_the_trackers_clock_whatever_time_a_client_wrote(written: str) -> None:
    finished = build(
        event("s", "start", "PokemonEncountered", time=written),
        event("s", "out", "CaptureFailed", cause="start", time=written),
    )
    fragment = build(event("f", "healed", "PokemonHealed", time=written))  # no start event
    for found, seen in ((finished, NOW + 1), (fragment, NOW)):
        assert timeline.settled_at(found) == seen  # when the tracker saw it
        assert not timeline.expired(found, seen + 3600, 3600)  # a time in the past does not shorten it
        assert timeline.expired(found, seen + 3601, 3600)  # a time in the future does not keep it


def letter(source: str, reason: str, offset: int = 0, consumer: str = "x") -> dict[str, Any]:
    """A dead letter of ``source``'s, as the tracker reads it from ``<source>.dlq``."""
    headers = [("pokesaga.dlq.reason", reason.encode()), ("pokesaga.dlq.consumer", consumer.encode())]
    return timeline.parse_dead_letter(b"s", source + ".dlq", headers, 0, offset, NOW * 1000)


def test_a_start_the_services_refused_is_refused_and_forgotten_after_the_retention() -> None:
    found = build(event("s", "start", "PokemonEncountered", time="9999-01-01T00:00:00Z"))
    assert timeline.view(found, NOW + 120, 60)["state"] == "stuck"  # no dead letter: it waits
    assert timeline.add_dead_letter(found, letter(topics.STATUS, "conflicting_copy: another event"), NOW + 5)
    view = timeline.view(found, NOW + 120, 60)
    assert (view["state"], view["waiting_on"]) == ("refused", None)
    assert timeline.settled_at(found) == NOW + 5
    assert not timeline.expired(found, NOW + 5 + 3600, 3600) and timeline.expired(found, NOW + 5 + 3601, 3600)
    alone = timeline.new("s")  # the start never placed (the tracker skipped it too), only its dead letter
    timeline.add_dead_letter(alone, letter(topics.STATUS, "invalid_data: no"), NOW)
    assert timeline.view(alone, NOW, 60)["state"] == "refused" and timeline.expired(alone, NOW + 3601, 3600)


def test_a_dead_letter_of_a_later_step_does_not_make_a_saga_refused() -> None:
    found = paralyzed()
    timeline.add_dead_letter(found, letter(topics.COMBAT, "invalid_data: no"), NOW)
    assert timeline.view(found, NOW, 60)["state"] == "running"
    assert timeline.settled_at(found) is None


def test_a_dead_lettered_compensation_needs_an_operator_and_is_kept_until_an_outcome() -> None:
    found = build(
        event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"),
        event("s", "par", "PokemonParalyzed", cause="start", time="2026-11-23T10:00:01Z", data=PAR),
        event("s", "faint", "PokemonFainted", cause="par", time="2026-11-23T10:00:02Z"),
    )
    timeline.add_dead_letter(found, letter(topics.FAILURES, "compensation_failed: IntegrityError: refused"), NOW)
    view = timeline.view(found, NOW + 10**6, 60)  # long past stuck_after: still an operator's to act on
    assert (view["state"], view["waiting_on"]) == ("needs_operator", None)
    assert timeline.settled_at(found) is None and not timeline.expired(found, NOW + 10**9, 3600)
    read(found, event("s", "out", "CaptureFailed", cause="faint", time="2026-11-23T10:05:00Z"), seen=NOW + 50)
    assert timeline.view(found, NOW + 60, 60)["state"] == "failed"  # replayed once fixed: it ends
    assert timeline.settled_at(found) == NOW + 50


@pytest.mark.parametrize(
    "reason",
    [
        "newer_version: PokemonFainted version 2; this instance reads up to version 1; held 24 h, nobody took it",
        "internal_error: KeyError: 'hp'",
        "rebuild_conflict: PokemonHealed was healed 12 hp, now 10",
    ],
)
def test_a_compensation_a_compensator_dead_lettered_for_a_reason_not_its_data_needs_an_operator(reason: str) -> None:
    """A compensator that never met an instance reading the failure's version, whose own code raised, or
    whose rebuild could not make a recorded decision again, dead-lettered the compensation: the
    unwinding stopped there, as for a compensation that failed on its data. The same from a step
    leaves the saga stuck."""
    for consumer, state in (("status.compensations", "needs_operator"), ("combat", "stuck")):
        found = build(
            event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"),
            event("s", "par", "PokemonParalyzed", cause="start", time="2026-11-23T10:00:01Z", data=PAR),
            event("s", "faint", "PokemonFainted", cause="par", time="2026-11-23T10:00:02Z"),
        )
        timeline.add_dead_letter(found, letter(topics.FAILURES, reason, consumer=consumer), NOW)
        assert timeline.view(found, NOW + 10**6, 60)["state"] == state, consumer


def test_a_compensation_failed_dead_letter_of_no_saga_seen_is_forgotten() -> None:
    """Anyone can write such a dead letter for any key: alone, it is a fragment, not a saga kept for ever."""
    alone = timeline.new("nobody")
    timeline.add_dead_letter(alone, letter(topics.FAILURES, "compensation_failed: made up"), NOW)
    assert timeline.view(alone, NOW, 60)["state"] != "needs_operator"
    assert timeline.settled_at(alone) == NOW and timeline.expired(alone, NOW + 3601, 3600)


# -- retry notices ---------------------------------------------------------------------------

RETRIES = CAPTURE.retries_topic
NEXT_AT = "2027-01-15T08:00:00.25Z"  # NOW + 0.25 s


def notice(saga: str, notice_id: str, cause: str, **data: Any) -> dict[str, Any]:
    """A retry notice as a participant writes it (``data`` overrides fields of its data)."""
    doc = envelope(saga, notice_id, NOTICE, source="capture/combat", causationid=cause)
    doc["data"] = {
        "participant": "combat", "event_type": "PokemonParalyzed", "attempt": 1, "maximum_attempts": 5,
        "next_attempt_at": NEXT_AT, "error": "TransientFault: injected transient fault",
    } | data  # fmt: skip
    return doc


def read(found: dict[str, Any], *docs: dict[str, Any], seen: float = NOW) -> list[bool]:
    """Each doc added to ``found`` from the topic it belongs on: whether it changed the timeline."""
    return [
        timeline.add(
            found, timeline.parse(encode(d), RETRIES if d["type"] == NOTICE else EVENT_TYPES[d["type"]].topic), seen
        )
        for d in docs
    ]


PAR, WEAK = {"previous_status": "HEALTHY"}, {"hp_before": 20, "damage": 10}


def paralyzed(saga: str = "s") -> dict[str, Any]:
    start = event(saga, "start", "PokemonEncountered", time="2026-11-23T10:00:00Z")
    return build(start, event(saga, "par", "PokemonParalyzed", cause="start", time="2026-11-23T10:00:01Z", data=PAR))


def test_the_notice_written_by_the_engine_is_read_as_the_participant_wrote_it() -> None:
    cause = Envelope(specversion="1.0", id="par", source="capture/status", type="PokemonParalyzed", sagaid="s", data={})
    written = retrynotice.notice(
        cause, participant="combat", source="capture/combat", attempt=2, maximum_attempts=0,
        next_attempt_at=NOW + 0.25, error="TransientFault: injected transient fault",
    )  # fmt: skip
    entry = timeline.parse(written.to_json(), RETRIES)
    assert {k: entry[k] for k in ("type", "saga_id", "causation", "participant", "event_type")} == {
        "type": NOTICE, "saga_id": "s", "causation": "par", "participant": "combat", "event_type": "PokemonParalyzed",
    }  # fmt: skip
    assert (entry["attempt"], entry["maximum_attempts"], entry["next_attempt_at"]) == (
        2,
        0,
        NEXT_AT.replace(".25", ".250000"),
    )


def test_a_saga_whose_next_participant_says_it_will_try_again_is_retrying_until_its_next_event() -> None:
    found = paralyzed()
    assert timeline.view(found, NOW, 60)["state"] == "running"
    assert read(found, notice("s", "n1", "par"), notice("s", "n2", "par", attempt=2)) == [True, True]
    view = timeline.view(found, NOW, 60)
    assert (view["state"], view["waiting_on"]) == ("retrying", "combat")
    assert view["retrying"] == found["retries"]["combat"]
    assert {k: view["retrying"][k] for k in ("participant", "attempt", "maximum_attempts", "causation")} == {
        "participant": "combat", "attempt": 2, "maximum_attempts": 5, "causation": "par",
    }  # fmt: skip
    assert [e["type"] for e in view["events"]] == ["PokemonEncountered", "PokemonParalyzed"]  # no event of the saga

    read(found, event("s", "weak", "PokemonWeakened", cause="par", time="2026-11-23T10:00:02Z", data=WEAK))
    view = timeline.view(found, NOW, 60)
    assert (view["state"], view["retrying"], view["waiting_on"]) == ("running", None, "pokeball")
    assert found["retries"]["combat"]["attempt"] == 2  # kept, superseded


def test_the_latest_notice_of_a_participant_is_kept_whatever_order_they_are_read_in() -> None:
    later = notice("s", "n3", "par", attempt=3, next_attempt_at="2027-01-15T08:00:05Z")
    earlier = notice("s", "n2", "par", attempt=2, next_attempt_at="2027-01-15T08:00:01Z")
    found = paralyzed()
    assert read(found, later, earlier, later) == [True, False, False]  # an older one, then a copy
    assert found["retries"]["combat"]["id"] == "n3"
    other = paralyzed()
    assert read(other, earlier, later) == [True, True]
    assert other["retries"] == found["retries"]


def test_a_retrying_saga_whose_participant_never_tries_again_becomes_stuck() -> None:
    found = paralyzed()
    read(found, notice("s", "n1", "par", next_attempt_at="2027-01-15T08:00:00Z"))
    due = timeline.instant("2027-01-15T08:00:00Z")
    assert timeline.view(found, due + 60, 60)["state"] == "retrying"
    assert timeline.view(found, due + 62, 60)["state"] == "stuck"


FAR = "9999-12-31T23:59:59Z"


def test_a_notice_claiming_a_far_future_attempt_hides_no_later_attempt_and_stuck_no_longer_than_a_day() -> None:
    forged = notice("s", "evil", "par", attempt=1, next_attempt_at=FAR, error="all fine")
    real = notice("s", "n2", "par", attempt=2, next_attempt_at="2027-01-15T08:00:01Z", error="TransientFault: real")
    found = paralyzed()
    assert read(found, forged, real) == [True, True]  # the later attempt, whatever time the other claims
    assert found["retries"]["combat"]["id"] == "n2"
    assert timeline.view(found, NOW, 60)["state"] == "retrying"
    years_later = NOW + 10 * 365 * 86400
    stored = json.loads(json.dumps(found))
    for kept in (found, timeline.restore(stored, "s")):
        assert timeline.view(kept, years_later, 60, restored=True)["state"] == "stuck"
    assert timeline.view(stored, years_later, 60)["state"] == "stuck"

    other = paralyzed()
    assert read(other, real, forged) == [True, False]  # an earlier attempt, read later
    assert other["retries"] == found["retries"]


def test_a_next_attempt_later_than_any_policy_waits_is_believed_a_day_after_the_notice_was_read() -> None:
    day = 86_400
    found = paralyzed()
    read(found, notice("s", "evil", "par", next_attempt_at=FAR), seen=NOW)
    stored = json.loads(json.dumps(found))
    for kept in (found, timeline.restore(stored, "s"), timeline.restore(timeline.restore(stored, "s"), "s")):
        assert timeline.view(kept, NOW + day + 60, 60, restored=True)["state"] == "retrying"
        assert timeline.view(kept, NOW + day + 61, 60, restored=True)["state"] == "stuck"
        assert kept["retries"]["combat"]["next_attempt_at"] == FAR  # shown as it was said
    within = paralyzed()
    read(within, notice("s", "n1", "par", next_attempt_at="2027-01-16T07:59:00Z"), seen=NOW)  # NOW + 1 day - 60 s
    assert timeline.view(within, NOW + day, 60)["state"] == "retrying"
    assert timeline.view(within, NOW + day + 1, 60)["state"] == "stuck"
    assert timeline.instant("2027-01-16T07:59:00Z") == NOW + day - 60


def test_of_two_notices_of_the_same_attempt_the_one_read_later_is_kept_and_a_copy_changes_nothing() -> None:
    real = notice("s", "n2", "par", attempt=2, next_attempt_at="2027-01-15T08:00:01Z")
    forged = notice("s", "evil", "par", attempt=2, next_attempt_at=FAR)
    found = paralyzed()
    assert read(found, real) == [True]
    assert read(found, real, seen=NOW + 1) == [False]  # a re-published copy: the same id
    assert read(found, forged, seen=NOW + 2) == [True]  # believed for a day at most (above)
    assert read(found, notice("s", "n3", "par", attempt=3), seen=NOW + 3) == [True]
    assert timeline.view(found, NOW + 3, 60)["retrying"]["id"] == "n3"


def test_a_notice_about_a_later_record_of_the_participant_supersedes_more_attempts_at_an_earlier_one() -> None:
    """A participant acting twice in a saga (here combat's compensator, asked to undo twice)."""
    undo = {"participant": "combat.compensations", "maximum_attempts": 0}
    found = build(
        event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"),
        event("s", "free", "PokemonBrokeFree", cause="start", time="2026-11-23T10:00:01Z"),
    )
    earlier = [notice("s", f"f{n}", "free", attempt=n, event_type="PokemonBrokeFree", **undo) for n in (1, 2, 3)]
    assert read(found, *earlier) == [True, True, True]
    read(found, event("s", "rel", "PokemonReleased", cause="free", time="2026-11-23T10:00:02Z"), seen=NOW + 1)
    later = notice("s", "r1", "rel", attempt=1, event_type="PokemonReleased", **undo)
    assert read(found, later, seen=NOW + 2) == [True]
    view = timeline.view(found, NOW + 2, 60)
    assert (view["state"], view["retrying"]["id"]) == ("retrying", "r1")
    assert read(found, earlier[2], seen=NOW + 3) == [False]  # a late copy about the record answered already
    assert found["retries"]["combat.compensations"]["id"] == "r1"


def test_a_compensator_retrying_an_undo_makes_the_unwinding_saga_retrying() -> None:
    found = build(
        event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"),
        event("s", "par", "PokemonParalyzed", cause="start", time="2026-11-23T10:00:01Z", data=PAR),
        event("s", "weak", "PokemonWeakened", cause="par", time="2026-11-23T10:00:02Z", data=WEAK),
        event("s", "free", "PokemonBrokeFree", cause="weak", time="2026-11-23T10:00:03Z"),
    )
    assert timeline.view(found, NOW, 60)["state"] == "compensating"
    undo = {"participant": "combat.compensations", "event_type": "PokemonBrokeFree", "maximum_attempts": 0}
    read(found, notice("s", "n1", "free", attempt=40, **undo))
    view = timeline.view(found, NOW, 60)
    assert (view["state"], view["waiting_on"], view["retrying"]["attempt"]) == ("retrying", "combat.compensations", 40)


def test_a_notice_about_another_event_than_the_one_the_saga_waits_on_does_not_make_it_retrying() -> None:
    found = paralyzed()
    read(found, notice("s", "n1", "elsewhere"))  # its cause is no event the saga waits on
    assert timeline.view(found, NOW, 60)["state"] == "running"
    early = build(event("t", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"))
    read(early, notice("t", "n1", "par"))  # read before the event it is about
    assert timeline.view(early, NOW, 60)["state"] == "running"


def test_notices_of_a_saga_with_no_event_settle_when_seen_and_are_forgotten() -> None:
    found = timeline.new("ghost")
    read(found, notice("ghost", "n1", "par"), seen=NOW)
    assert timeline.settled_at(found) == NOW and timeline.expired(found, NOW + 3601, 3600)


@pytest.mark.parametrize(
    ("doc", "topic", "reason"),
    [
        (notice("s", "n", "par"), topics.COMBAT, "wrong_topic"),  # a notice on a saga topic
        (event("s", "e", "PokemonEncountered"), RETRIES, "wrong_topic"),  # an event on the notices' topic
        (event("s", "e", "pokesaga.StepExploding"), RETRIES, "unknown_type"),
        (notice("s", "n", "par") | {"data": []}, RETRIES, "not_cloudevent"),
        (notice("s", "n", "par") | {"causationid": None}, RETRIES, "invalid_data"),
        (notice("s", "n", "par", participant="pokeball"), RETRIES, "invalid_data"),  # it handles no PokemonParalyzed
        (notice("s", "n", "par", participant="team-rocket"), RETRIES, "invalid_data"),
        (notice("s", "n", "par", event_type="PokemonCaptured"), RETRIES, "invalid_data"),
        (notice("s", "n", "par", event_type="x" * 10_000), RETRIES, "invalid_data"),
        (notice("s", "n", "par", attempt="2"), RETRIES, "invalid_data"),
        (notice("s", "n", "par", attempt=True), RETRIES, "invalid_data"),
        (notice("s", "n", "par", attempt=0), RETRIES, "invalid_data"),
        (notice("s", "n", "par", attempt=2.5), RETRIES, "invalid_data"),
        (notice("s", "n", "par", attempt=10**400), RETRIES, "invalid_data"),
        (notice("s", "n", "par", attempt=10**12, maximum_attempts=0), RETRIES, "invalid_data"),
        (notice("s", "n", "par", attempt=6, maximum_attempts=5), RETRIES, "invalid_data"),
        (notice("s", "n", "par", maximum_attempts=-1), RETRIES, "invalid_data"),
        (notice("s", "n", "par", maximum_attempts=None), RETRIES, "invalid_data"),
        (notice("s", "n", "par", next_attempt_at="soon"), RETRIES, "invalid_data"),
        (notice("s", "n", "par", next_attempt_at=1_800_000_000), RETRIES, "invalid_data"),
        (notice("s", "n", "par", next_attempt_at="1800000000"), RETRIES, "invalid_data"),
        (notice("s", "n", "par", next_attempt_at="2026-02-30T10:00:00Z"), RETRIES, "invalid_data"),
        (notice("s", "n", "par", error="x" * 501), RETRIES, "invalid_data"),
        (notice("s", "n", "par", error="\x00"), RETRIES, "invalid_data"),
        (notice("s", "n", "par", error=["a list"]), RETRIES, "invalid_data"),
        (notice("s", "n", "par") | {"data": {"participant": json.loads(nested(10))}}, RETRIES, "invalid_data"),
    ],
)
def test_a_notice_no_participant_would_write_is_refused(doc: dict[str, Any], topic: str, reason: str) -> None:
    assert refused(encode(doc), topic) == reason


def test_a_notice_counts_as_many_attempts_as_a_policy_allows_and_no_more() -> None:
    assert RetryPolicy(maximum_attempts=MAX_ATTEMPTS).maximum_attempts == MAX_ATTEMPTS == 10**9
    with pytest.raises(ValueError):
        RetryPolicy(maximum_attempts=MAX_ATTEMPTS + 1)
    most = notice("s", "n", "par", attempt=MAX_ATTEMPTS, maximum_attempts=MAX_ATTEMPTS)
    found = paralyzed()
    assert read(found, most) == [True]
    assert timeline.restore(json.loads(json.dumps(found)), "s") == found
    for field in ("attempt", "maximum_attempts"):
        assert refused(encode(notice("s", "n", "par", **{field: MAX_ATTEMPTS + 1})), RETRIES) == "invalid_data"
        stored = json.loads(json.dumps(found))
        stored["retries"]["combat"][field] = MAX_ATTEMPTS + 1
        assert timeline.restore(stored, "s")["retries"] == {}


def test_a_notice_is_shown_bounded_and_what_it_says_is_kept_as_text() -> None:
    hostile = "\x1b[2J\u202e<script>alert(1)</script>"
    entry = timeline.parse(encode(notice("s", "n", "par", error=hostile, surplus="x" * 10_000)), RETRIES)
    assert entry["error"] == hostile and "surplus" not in entry  # shown as text by the page and trace


def test_a_timeline_stored_before_notices_were_kept_is_restored_with_none() -> None:
    stored = older()
    assert "retries" not in stored
    restored = timeline.restore(stored, "old")
    assert restored["retries"] == {} and timeline.view(stored, NOW, 60)["state"] in ("running", "stuck")


def test_a_timeline_with_notices_comes_back_from_the_table_equal() -> None:
    found = paralyzed()
    read(found, notice("s", "n1", "par", attempt=2, maximum_attempts=0))
    stored = json.loads(json.dumps(found))
    assert timeline.restore(stored, "s") == found
    assert timeline.view(stored, NOW, 60)["state"] == "retrying"


GOOD_NOTICE = {
    "id": "n", "causation": "e2", "participant": "combat", "event_type": "PokemonParalyzed", "attempt": 2,
    "maximum_attempts": 5, "next_attempt_at": NEXT_AT, "error": "TransientFault", "time": None, "seen_at": NOW,
}  # fmt: skip


@pytest.mark.parametrize(
    "retries",
    [
        None,
        "combat",
        [GOOD_NOTICE],
        {"combat": None},
        {"combat": GOOD_NOTICE | {"attempt": "2"}},
        {"combat": GOOD_NOTICE | {"attempt": True}},
        {"combat": GOOD_NOTICE | {"maximum_attempts": -1}},
        {"combat": GOOD_NOTICE | {"next_attempt_at": 12345}},
        {"combat": GOOD_NOTICE | {"id": ""}},
        {"combat": GOOD_NOTICE | {"causation": None}},
        {"combat": GOOD_NOTICE | {"error": HUGE, "id": HUGE, "event_type": HUGE, "seen_at": math.nan, "time": HUGE}},
        {"combat": GOOD_NOTICE | {"participant": "pokeball"}, "pokeball": GOOD_NOTICE},
        {f"p{i}": GOOD_NOTICE for i in range(10_000)} | {"combat": GOOD_NOTICE},
    ],
)
def test_whatever_a_table_holds_as_notices_is_restored_bounded(retries: Any) -> None:
    view = timeline.view(older(retries=retries), NOW, 60, key=b"key")
    assert view["state"] in timeline.STATES
    assert set(view["retries"]) <= set(CAPTURE.participants)
    for participant, kept in view["retries"].items():
        assert kept["participant"] == participant
        assert isinstance(kept["attempt"], int) and not isinstance(kept["attempt"], bool) and kept["attempt"] >= 1
        assert isinstance(kept["maximum_attempts"], int) and kept["maximum_attempts"] >= 0
        assert timeline.canonical_rfc3339(kept["next_attempt_at"]) == kept["next_attempt_at"]
        assert len(kept["id"]) <= timeline.MAX_ID and len(kept["error"]) <= timeline.MAX_ERROR
        assert len(kept["event_type"]) <= timeline.MAX_TYPE and math.isfinite(kept["seen_at"])
    json.dumps(view, allow_nan=False)
    assert timeline.restore(view, b"key") == timeline.restore(older(retries=retries), b"key")


def test_a_time_seen_that_a_changelog_puts_in_the_future_is_read_back_as_now() -> None:
    """The tracker's clock decides retention, and so does what its changelog says it saw: anyone
    can write that topic, and a ``seen_at`` of 1e300 would keep a saga for ever."""
    found = build(
        event("s", "start", "PokemonEncountered", time="2026-11-23T10:00:00Z"),
        event("s", "out", "CaptureFailed", cause="start", time="2026-11-23T10:00:00.25Z"),
    )
    stored = json.loads(json.dumps(found))
    for e in stored["events"]:
        e["seen_at"] = 1e300
    restored = timeline.restore(stored, "s", now=NOW + 10)
    assert timeline.settled_at(restored) == NOW + 10 and timeline.expired(restored, NOW + 3611, 3600)
    assert timeline.settled_at(timeline.restore(stored, "s")) == 1e300  # a reader with no clock: as stored


def test_a_saga_id_no_request_can_name_is_skipped_not_kept() -> None:
    """The services take a saga id with a tab in it; the tracker's changelog cannot hold it (its
    codec refuses the key on recovery) and no request can ask for it: skipped and counted."""
    with pytest.raises(timeline.NotAnEvent) as refused:
        timeline.parse(encode(event("tab\there", "e", "PokemonEncountered")), topics.STATUS, [], 0, 0)
    assert refused.value.reason == "invalid_data"


def test_an_event_of_a_newer_version_is_shown_and_the_participant_holding_it_says_why() -> None:
    """A producer upgraded before the tracker: its version 2 event (a field this reader does not
    know, another that no longer validates here) is on the timeline, not refused; the participant
    that holds it for an upgrade says so in a notice, shown as the saga's wait."""
    found = paralyzed()
    newer = event("s", "weak", "PokemonWeakened", cause="par", time="2026-11-23T10:00:02Z",
                  data={"hp_before": "twenty", "critical": True}, dataversion=2)  # fmt: skip
    held = notice("s", "n1", "weak", participant="pokeball", event_type="PokemonWeakened", maximum_attempts=0,
                  error="newer_version: PokemonWeakened version 2; this instance reads up to version 1")  # fmt: skip
    assert read(found, newer, held) == [True, True]
    view = timeline.view(found, NOW, 60)
    assert [e["type"] for e in view["events"]][-1] == "PokemonWeakened"
    assert (view["state"], view["waiting_on"]) == ("retrying", "pokeball")
    assert view["retrying"]["error"].startswith("newer_version: PokemonWeakened version 2")
    with pytest.raises(NotAnEvent, match="invalid_data"):  # the same data at version 1 is refused as it was
        timeline.parse(encode(newer | {"dataversion": 1}), topics.POKEBALL)


def test_a_saga_held_for_a_newer_version_is_shown_held_with_its_reason_while_it_is_held() -> None:
    """The participant holds the record up to newer_version_hold_hours (24 h), looking again every
    newer_version_wait_seconds (10 s) without a new notice. A minute later the console said ``stuck``,
    no reason shown, and the stuck gauge counted it: an operator paged for a deployment order."""
    found = paralyzed()
    newer = event("s", "weak", "PokemonWeakened", cause="par", time="2026-11-23T10:00:02Z", dataversion=2)
    held = notice("s", "n1", "weak", participant="pokeball", event_type="PokemonWeakened", maximum_attempts=0,
                  next_attempt_at=NEXT_AT, error="newer_version: PokemonWeakened version 2; this instance reads "
                  "up to version 1")  # fmt: skip
    read(found, newer, held)
    later = timeline.view(found, NOW + 3600, 60)
    assert later["state"] == "retrying" and later["retrying"]["error"].startswith("newer_version")
    assert timeline.view(found, NOW + 86_400 + 120, 60)["state"] == "stuck"  # past a day's hold: dead-lettered
