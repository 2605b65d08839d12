"""A record of another version than the participant's (engine.versions, engine.worker.batch.passes):
an older one is upcast and applied; a newer one is held — parked for the saga, shown by ``inspect``
and the retry notices, its saga's later records behind it, other sagas going on — until an
upgraded instance takes it, or dead-lettered as ``newer_version`` after the bound; a producer
pinned to an older version publishes it, the added fields dropped."""

from __future__ import annotations

import asyncio
import json
import time

from engine.cli import inspection
from engine.saga import Saga
from engine.store.parked import ParkedRecord
from engine.wire.envelope import wrap
from engine.worker.batch.processor import BatchProcessor
from tests.toy import evolve
from tests.toy.events import FAILURES, FIRST, FirstFailed
from tests.toy.kit import Rec, applied, asked, engine_for, first_done, outcomes, second_failed, tally
from tests.toy.saga import TOY, Settings
from tests.toy.tables import ToyRecords

NEWER = "newer_version: Asked version 2; this instance reads up to version 1"


def build(version: str, name: str, settings: Settings) -> BatchProcessor:
    """Participant ``name`` of one build of the toy saga (tests.toy.evolve), on the service's database."""
    saga: Saga = evolve.BUILDS[version]
    participant = saga.participants[name]
    return BatchProcessor(participant, saga.types, engine_for(participant.service, settings), settings)


def newer(envelope_json: bytes, version: int = 2) -> bytes:
    doc = json.loads(envelope_json)
    doc["dataversion"] = version
    doc["data"]["colour"] = "blue"  # what a newer producer would add
    return json.dumps(doc).encode()


def parked_reasons(processor: BatchProcessor) -> list[tuple[str, str, int]]:
    with processor.engine.connect() as conn:
        t = processor.parked.table
        return [(r.saga_id, r.reason, r.attempts) for r in conn.execute(t.select().order_by(t.c.id))]


async def test_a_start_event_of_a_newer_version_is_held_and_shown_not_applied_as_version_1(settings: Settings) -> None:
    settings = settings.model_copy(update={"newer_version_wait_seconds": 0.01})
    first = build("1", "first", settings)
    held, other = (
        Rec(newer(asked("nv-1", name="Nia").to_json()), topic=FIRST),
        Rec(asked("nv-2").to_json(), topic=FIRST),
    )
    result = await applied(first, [held, other])
    assert result.held == ["Asked"] and result.parked == 1
    assert outcomes(result) == ["FirstDone"]  # the other saga went on
    assert tally(first, "Nia") == 0  # not applied as version 1
    assert parked_reasons(first) == [("nv-1", "newer_version", 1)]
    notice = next(row for row in result.outbox if row.topic == TOY.retries_topic)
    assert json.loads(notice.value)["data"]["error"] == NEWER  # the tracker shows the saga waiting, and why
    view = inspection.saga(TOY, settings, "nv-1")
    (line,) = [line for line in inspection.render_saga(view).splitlines() if "Asked" in line]
    said = "Asked version 2; this instance reads up to version 1"
    assert line.strip() == f"first  Asked  newer_version: {said}; held for an upgraded instance"

    # Looked at again by an instance that still cannot read it: held again, nothing else.
    records, _ = await _due(first)
    again = await applied(first, records)
    assert again.held == ["Asked"] and not again.outbox and not again.dead_letters
    assert parked_reasons(first) == [("nv-1", "newer_version", 2)]


async def test_the_sagas_later_records_wait_behind_the_held_one(settings: Settings) -> None:
    undo = build("1", "first.compensations", settings)
    held = Rec(newer(second_failed("nv-w", name="Wes").to_json()), topic=FAILURES)
    behind = wrap(
        FirstFailed(name="Wes", reason="x", failed_step="first"), saga_id="nv-w", source="t", causation_id="c"
    )
    result = await applied(undo, [held, Rec(behind.to_json(), topic=FAILURES)])
    assert result.held == ["SecondFailed"] and result.parked == 2 and not outcomes(result)
    assert [reason for _, reason, _ in parked_reasons(undo)] == ["newer_version", "waiting"]


async def test_an_upgraded_instance_takes_what_an_old_one_held(settings: Settings) -> None:
    """The wrong order of a rollout: the producer first. The consumer's old instance holds version 2;
    its upgraded instance, on the same database, applies it and uses the new field."""
    settings = settings.model_copy(update={"newer_version_wait_seconds": 0.01})
    producer = build("2", "first", settings)
    (row,) = (await applied(producer, [Rec(asked("nv-up", name="Uma").to_json(), topic=FIRST)])).outbox
    assert json.loads(row.value)["dataversion"] == 2
    old, new = build("1", "second", settings), build("2", "second", settings)
    assert (await applied(old, [Rec(row.value)])).held == ["FirstDone"]
    records, _ = await _due(new)
    done = await applied(new, records)
    assert outcomes(done) == ["SecondDone"] and not parked_reasons(new)
    with new.engine.connect() as conn:
        assert ToyRecords(conn).outcome("nv-up") == "done:v2:nv-up"


async def test_a_record_held_past_the_bound_is_dead_lettered_and_applied_once_replayed_to_an_upgraded_one(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"newer_version_wait_seconds": 0.01, "newer_version_hold_hours": 1e-6})
    value = wrap(
        evolve.FirstDone(name="Dot", stamp="v2:nv-dl"), saga_id="nv-dl", source="t", causation_id="c"
    ).to_json()
    old = build("1", "second", settings)
    await applied(old, [Rec(value)])
    records, _ = await _due(old)
    result = await applied(old, records)
    said = "newer_version: FirstDone version 2; this instance reads up to version 1"
    assert result.dead_letters == [f"{said}; held 1e-06 h, no instance took it"]
    assert not parked_reasons(old) and not result.held
    # `pokesaga dlq replay` puts the record back on its topic once the service is upgraded: applied.
    new = build("2", "second", settings)
    assert outcomes(await applied(new, [Rec(value)])) == ["SecondDone"]
    with new.engine.connect() as conn:
        assert ToyRecords(conn).outcome("nv-dl") == "done:v2:nv-dl"


async def test_an_older_record_is_upcast_and_a_pinned_producer_publishes_the_older_version(
    settings: Settings,
) -> None:
    """The right order, and expand-then-contract: version 2 reads version 1; a version 2 producer
    pinned to 1 publishes what a version 1 reader takes."""
    new = build("2", "second", settings)
    assert outcomes(await applied(new, [Rec(first_done("nv-old", name="Olga").to_json())])) == ["SecondDone"]
    with new.engine.connect() as conn:
        assert ToyRecords(conn).outcome("nv-old") == "done:unstamped"
    pinned = build("2", "first", settings.model_copy(update={"publish_versions": {"FirstDone": 1}}))
    (row,) = (await applied(pinned, [Rec(asked("nv-pin").to_json(), topic=FIRST)])).outbox
    doc = json.loads(row.value)
    assert doc["dataversion"] == 1 and "stamp" not in doc["data"]
    old = build("1", "second", settings)
    assert outcomes(await applied(old, [Rec(row.value)])) == ["SecondDone"]


async def _due(processor: BatchProcessor, timeout: float = 10) -> tuple[list[ParkedRecord], float | None]:
    """The processor's parked records once some fall due (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        records, next_due = processor.parked_records(100)
        if records or time.monotonic() > deadline:
            return records, next_due
        await asyncio.sleep(0.01)


async def test_a_record_parked_for_another_reason_then_held_is_shown_as_held(settings: Settings) -> None:
    """A newer record that waited first (parked while its participant rebuilt, or behind its saga's
    record being retried) is held when its turn comes. It was held in silence: no retry notice said
    newer_version, so the tracker never showed the saga waiting for an upgrade, nor why."""
    settings = settings.model_copy(update={"newer_version_wait_seconds": 0.01})
    saga = evolve.BUILDS["1"]
    participant = saga.participants["second"]
    rebuilding = BatchProcessor(
        participant, saga.types, engine_for(participant.service, settings), settings, history={}
    )
    parked = await applied(rebuilding, [Rec(newer(first_done("nv-rb", name="Rhea").to_json()))])
    assert parked.parked == 1 and not parked.held and parked_reasons(rebuilding) == [("nv-rb", "rebuilding", 0)]
    rebuilding.rebuilt()
    records, _ = await _due(rebuilding)
    held = await applied(rebuilding, records)
    assert held.held == ["FirstDone"] and parked_reasons(rebuilding) == [("nv-rb", "newer_version", 1)]
    (notice,) = [row for row in held.outbox if row.topic == TOY.retries_topic]
    said = "newer_version: FirstDone version 2; this instance reads up to version 1"
    assert json.loads(notice.value)["data"]["error"] == said
    # Held again: said once, not at every look.
    records, _ = await _due(rebuilding)
    assert not (await applied(rebuilding, records)).outbox


async def test_a_compensation_held_past_the_bound_is_a_saga_needing_an_operator(settings: Settings) -> None:
    """A compensator's record held until the bound is a compensation that cannot be applied: its
    dead letter stops the unwinding, and the saga needs a person (the loud log line, the metric), as
    for any compensation dead-lettered. It was dead-lettered as a refused record, in silence."""
    settings = settings.model_copy(update={"newer_version_wait_seconds": 0.01, "newer_version_hold_hours": 1e-6})
    undo = build("1", "first.compensations", settings)
    await applied(undo, [Rec(newer(second_failed("nv-op", name="Opal").to_json()), topic=FAILURES)])
    records, _ = await _due(undo)
    result = await applied(undo, records)
    said = (
        "newer_version: SecondFailed version 2; this instance reads up to version 1; held 1e-06 h, no instance took it"
    )
    assert result.dead_letters == [said]
    assert result.operator == {"nv-op": (said, f"{FAILURES}.dlq")}


async def test_an_old_and_an_upgraded_instance_taking_the_same_due_held_record_apply_it_once(
    settings: Settings,
) -> None:
    """Both instances of the service read the held record as due; the old one holds it again first,
    so the upgraded one's copy of it is no longer due (the parked records' lock): nothing applied
    twice, nothing lost; the upgraded instance takes it at its next look."""
    settings = settings.model_copy(update={"newer_version_wait_seconds": 0.5})
    value = wrap(evolve.FirstDone(name="Twin", stamp="v2:nv-2i"), saga_id="nv-2i", source="t", causation_id="c")
    old, new = build("1", "second", settings), build("2", "second", settings)
    await applied(old, [Rec(value.to_json())])
    (seen_by_old, _), (seen_by_new, _) = await _due(old), await _due(new)
    assert [r.id for r in seen_by_old] == [r.id for r in seen_by_new]
    assert (await applied(old, seen_by_old)).held == ["FirstDone"]
    late = await applied(new, seen_by_new)
    assert not late.outbox and not late.held and tally(new, "Twin") == 0
    records, _ = await _due(new)
    assert outcomes(await applied(new, records)) == ["SecondDone"]
    records, _ = await _due(old, timeout=0.2)
    assert not records and tally(new, "Twin") == 1 and not parked_reasons(new)


async def test_the_holds_bound_counts_from_the_first_hold_not_from_an_earlier_park(settings: Settings) -> None:
    """A record parked while its participant rebuilt (or behind its saga's record being retried) for
    longer than the bound is dead-lettered at its first look, never held: an upgraded instance had no
    chance to take it."""
    settings = settings.model_copy(update={"newer_version_wait_seconds": 0.01, "newer_version_hold_hours": 0.5 / 3600})
    saga = evolve.BUILDS["1"]
    participant = saga.participants["second"]
    rebuilding = BatchProcessor(
        participant, saga.types, engine_for(participant.service, settings), settings, history={}
    )
    await applied(rebuilding, [Rec(newer(first_done("nv-bd", name="Bea").to_json()))])
    await asyncio.sleep(0.6)  # the rebuild took longer than the bound
    rebuilding.rebuilt()
    records, _ = await _due(rebuilding)
    first_look = await applied(rebuilding, records)
    assert first_look.held == ["FirstDone"] and not first_look.dead_letters


async def test_an_instance_starting_looks_at_once_at_what_its_siblings_held(settings: Settings) -> None:
    """Held records are looked at less and less often (a client can write many); an upgraded instance
    starting makes them due at once, not at the old instances' next look."""
    settings = settings.model_copy(update={"newer_version_wait_seconds": 600})
    assert [settings.newer_version_wait(n) for n in (0, 1, 2, 10)] == [600, 600, 600, 600]  # this long, at least
    quick = settings.model_copy(update={"newer_version_wait_seconds": 10})
    assert [quick.newer_version_wait(n) for n in (0, 1, 2, 5, 50)] == [10, 20, 40, 300, 300]
    old, new = build("1", "second", settings), build("2", "second", settings)
    value = wrap(evolve.FirstDone(name="Eve", stamp="v2:nv-wake"), saga_id="nv-wake", source="t", causation_id="c")
    assert (await applied(old, [Rec(value.to_json())])).held == ["FirstDone"]
    assert new.parked_records(100)[0] == []  # due in ten minutes
    assert new.wake_held() == 1
    records, _ = new.parked_records(100)
    assert outcomes(await applied(new, records)) == ["SecondDone"]
