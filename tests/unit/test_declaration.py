"""The capture saga is declared once (capture/saga.py); everything else is derived from it."""

from __future__ import annotations

import pytest

from capture import tracking as timeline
from capture.saga import CAPTURE
from contracts import topics
from contracts.events import EVENT_TYPES

pytestmark = pytest.mark.no_database

# What the design says a saga that stopped right after each event is waiting on (DESIGN.md's two
# tables, written out by hand: the declaration must agree with it, not the other way round).
WAITS_ON = {
    "PokemonEncountered": "status",
    "PokemonParalyzed": "combat",
    "PokemonWeakened": "pokeball",
    "PokemonCaught": "delivery",
    "ParalysisFailed": "status.compensations",
    "PokemonFainted": "status.compensations",
    "PokemonBrokeFree": "combat.compensations",
    "OutOfPokeballs": "combat.compensations",
    "DeliveryFailed": "pokeball.compensations",
    "PokemonReleased": "combat.compensations",
    "PokemonHealed": "status.compensations",
    "PokemonDelivered": None,
    "CaptureFailed": None,
}


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_a_saga_stopped_after_each_event_waits_on_the_participant_that_handles_it(type_: str) -> None:
    saga = timeline.new("s")
    entry = {"id": "e1", "type": type_, "saga_id": "s", "service": "x", "topic": "t", "time": None, "causation": None}
    timeline.add(saga, entry, seen_at=0.0)
    assert timeline.waiting_on(saga) == WAITS_ON[type_]


def test_the_declaration_holds_every_event_of_the_design_once() -> None:
    assert set(CAPTURE.types) == set(WAITS_ON)
    handled = [t for p in CAPTURE.participants.values() for t in p.handlers]
    assert sorted(handled) == sorted(t for t, who in WAITS_ON.items() if who)  # each handled exactly once


def test_the_participants_and_topics_derive_from_the_declaration() -> None:
    # Each compensator reads the failure topics of the services whose failures it undoes, and the
    # one topic every failure went to before (topics.FAILURES): written by no one, still read.
    assert CAPTURE.groups == {
        "status": [topics.STATUS], "combat": [topics.COMBAT], "pokeball": [topics.POKEBALL],
        "delivery": [topics.DELIVERY], "pokeball.compensations": [topics.DELIVERY_FAILURES, topics.FAILURES],
        "combat.compensations": [topics.POKEBALL_FAILURES, topics.FAILURES],
        "status.compensations": [topics.STATUS_FAILURES, topics.COMBAT_FAILURES, topics.FAILURES],
    }  # fmt: skip
    consumed = [topics.STATUS, topics.COMBAT, topics.POKEBALL, topics.DELIVERY, topics.DELIVERY_FAILURES,
                topics.FAILURES, topics.POKEBALL_FAILURES, topics.STATUS_FAILURES, topics.COMBAT_FAILURES]  # fmt: skip
    assert CAPTURE.all_topics() == [*topics.ALL, *(topics.dead_letters(t) for t in consumed), "capture.retries"]
    assert [c.name for c in CAPTURE.compensations] == [
        "pokeball.compensations", "combat.compensations", "status.compensations"
    ]  # the order they unwind in  # fmt: skip
    assert CAPTURE.start.__name__ == "PokemonEncountered"
    assert {p.source for p in CAPTURE.participants.values()} >= {"pokesaga/status", "pokesaga/status.compensations"}


def test_every_service_of_the_declaration_has_its_database_setting() -> None:
    from capture.settings import SERVICES, Settings

    assert SERVICES == ("status", "combat", "pokeball", "delivery")
    assert Settings.SERVICES == SERVICES  # what databases, POKESAGA_<SERVICE>_DB_URL and step_retry accept
    assert Settings(databases={"pokeball": "sqlite:///pokeball.db"}).db_url("pokeball") == "sqlite:///pokeball.db"


def test_each_failure_of_the_capture_saga_is_written_by_its_service_alone_and_the_former_topic_by_no_one() -> None:
    """The capture saga's failures have a topic per service: no service may forge another's."""
    from engine.ops.acls import derive

    rules = derive(CAPTURE)
    writers = {
        topic: {a.principal for a in rules if a.operation == "Write" and a.name == topic}
        for topic in (topics.STATUS_FAILURES, topics.COMBAT_FAILURES, topics.POKEBALL_FAILURES,
                      topics.DELIVERY_FAILURES, topics.FAILURES)
    }  # fmt: skip
    assert writers == {
        topics.STATUS_FAILURES: {"User:status"}, topics.COMBAT_FAILURES: {"User:combat"},
        topics.POKEBALL_FAILURES: {"User:pokeball"}, topics.DELIVERY_FAILURES: {"User:delivery"},
        topics.FAILURES: set(),
    }  # fmt: skip
    # Still read where failures went before: by every service with a compensator, and by the tracker.
    readers = {a.principal for a in rules if a.operation == "Read" and a.name == topics.FAILURES}
    assert readers >= {"User:status", "User:combat", "User:pokeball", "User:tracker"}
