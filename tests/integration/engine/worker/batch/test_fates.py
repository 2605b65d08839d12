"""What becomes of each record of a batch (engine.worker.batch.fates), decided before anything is
applied: refused with its reason, a duplicate (by its partition's position or by its event id), an
id reused by another saga, a conflicting copy, parked behind its saga's head; against a real database.
The toy's second step is the vehicle: its tally says how many times a record was applied."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from engine.wire.deadletter import REASON_HEADER, dead_letters
from engine.wire.envelope import legacy_caused_id, wrap
from engine.worker.batch.errors import StartedOver, Unverified
from engine.worker.batch.processor import BatchProcessor
from tests.toy.events import SECOND, Asked
from tests.toy.kit import UNLIMITED, Rec, applied, asked, first_done, ordered, processor_for, published, tally
from tests.toy.saga import Settings


async def test_a_duplicate_record_is_not_applied_twice(second: BatchProcessor) -> None:
    env = first_done("dup-1")
    first = await applied(second, [Rec(env.to_json(), offset=0)])
    again = await applied(second, [Rec(env.to_json(), offset=1)])
    same_batch = await applied(second, [Rec(first_done("dup-2").to_json()), Rec(first_done("dup-2").to_json())])
    assert first.applied == {"FirstDone": 1} and len(first.outbox) == 1
    assert again.applied == {} and again.duplicates == 1 and again.outbox == []
    assert same_batch.applied == {"FirstDone": 1} and same_batch.duplicates == 1
    assert tally(second, "Ann") == 2  # two sagas, applied once each, whatever was redelivered


async def test_bad_records_become_dead_letters_and_the_rest_of_the_batch_is_applied(second: BatchProcessor) -> None:
    garbage = Rec(b"\x00garbage", offset=7)
    not_ce = Rec(json.dumps({"hello": "world"}).encode(), offset=8)
    invalid = json.loads(first_done("bad-3").to_json())
    invalid["data"]["name"] = "Agumon" * 20  # longer than a name may be
    unknown = json.loads(first_done("bad-4").to_json())
    unknown["type"] = "Evolved"
    wrong_topic = json.loads(first_done("bad-6").to_json())
    wrong_topic["type"] = "Asked"  # an event of the saga, but it belongs on toy.first
    result = await applied(second,
        [garbage, not_ce, Rec(json.dumps(invalid).encode(), offset=9), Rec(json.dumps(unknown).encode(), offset=10),
         Rec(json.dumps(wrong_topic).encode(), topic=SECOND, offset=11),
         Rec(first_done("good-5", name="Gail").to_json(), offset=12)]
    )  # fmt: skip
    assert result.applied == {"FirstDone": 1}
    assert result.skipped == 0
    dead = [row for row in result.outbox if row.topic == dead_letters(SECOND)]
    reasons = [dict(row.headers)[REASON_HEADER] for row in dead]
    kinds = ["not_json", "not_cloudevent", "invalid_data", "unknown_type", "wrong_topic"]
    assert [r.split(":")[0] for r in reasons] == kinds
    assert "name" in reasons[2] and "at most 64 characters" in reasons[2]
    assert dead[0].value == b"\x00garbage" and dict(dead[0].headers)["pokesaga.dlq.offset"] == "7"


@pytest.mark.parametrize("value", ["1700000000", "2020-01-01", "0", "x" * 10_000, 12, True, [], {"at": 1}])
async def test_a_deadline_that_is_no_rfc_3339_date_time_is_a_dead_letter(second: BatchProcessor, value: Any) -> None:
    doc = json.loads(first_done(f"bad-deadline-{uuid.uuid4().hex[:6]}").to_json())
    doc["sagadeadline"] = value
    (row,) = (await applied(second, [Rec(json.dumps(doc).encode())])).outbox
    assert row.topic == dead_letters(SECOND)
    assert "sagadeadline" in dict(row.headers)[REASON_HEADER]


async def test_an_event_a_participant_handles_on_another_events_topic_of_the_saga_is_a_dead_letter(
    settings: Settings,
) -> None:
    """Each topic of a saga has its own writers (the brokers' ACLs): a participant reading two topics
    takes an event only from the event's own, so a writer of one cannot pass for the other's."""
    log: list[str] = []
    processor = processor_for("second", settings, FirstDone=ordered(log), Asked=ordered(log))
    result = await applied(processor, [
        Rec(asked("own-1", name="Ida").to_json()),  # on toy.first, its topic
        Rec(asked("forged-1", name="Fox").to_json(), topic=SECOND),  # on FirstDone's topic
    ])  # fmt: skip
    assert result.applied == {"Asked": 1}
    (row,) = published(result)
    assert row.topic == dead_letters(SECOND)
    assert dict(row.headers)[REASON_HEADER] == "wrong_topic: Asked belongs on toy.first"


async def test_a_record_reusing_the_id_of_another_sagas_parked_record_is_a_dead_letter(settings: Settings) -> None:
    settings = settings.model_copy(update={"retry": UNLIMITED})
    processor = processor_for("second", settings, FirstDone=ordered([], {"held-1"}))
    held = first_done("held-1", name="Hal")
    assert (await applied(processor, [Rec(held.to_json())])).parked == 1
    forged = first_done("other-1", name="Ozzy").model_copy(update={"id": held.id})
    result = await applied(processor, [Rec(forged.to_json())])
    (row,) = published(result)
    assert dict(row.headers)[REASON_HEADER].startswith("event_id_reused: event id")
    assert processor.parked.count(processor.engine) == 1 and tally(processor, "Ozzy") == 0


async def test_an_event_copied_under_its_id_derived_the_other_way_is_a_duplicate_not_a_conflicting_copy(
    second: BatchProcessor,
) -> None:
    """An upstream participant that publishes one event again across an upgrade (once as the old
    code derived its id, once as the new one does): the copy is the same event."""
    new = first_done("copy-1", name="Cal")
    old = new.model_copy(update={"id": legacy_caused_id(new.causationid or "", new.type)})
    assert old.id != new.id
    first = await applied(second, [Rec(old.to_json())])
    again = await applied(second, [Rec(new.to_json())])
    assert first.applied == {"FirstDone": 1} and len(first.outbox) == 1
    assert again.applied == {} and again.duplicates == 1 and again.outbox == []
    other = new.model_copy(update={"id": str(uuid.uuid4())})  # not derived from the cause: a conflicting copy
    (dead,) = (await applied(second, [Rec(other.to_json())])).outbox
    assert dict(dead.headers)[REASON_HEADER].startswith("conflicting_copy: ")
    assert tally(second, "Cal") == 1


async def test_copies_of_a_parked_record_are_refused_as_if_it_were_applied(settings: Settings) -> None:
    """While a saga's record is parked, a client's copies of it under new ids, or another event
    reusing its id, are dead letters: the parked table cannot be flooded, nothing is dropped."""
    settings = settings.model_copy(update={"retry": UNLIMITED})
    handle = ordered([], {"flood-1"})
    processor = processor_for("second", settings, FirstDone=handle, Asked=handle)
    held = first_done("flood-1", name="Flo")
    assert (await applied(processor, [Rec(held.to_json())])).parked == 1
    copies = [held.model_copy(update={"id": f"copy-{n}"}) for n in range(50)]
    reused = wrap(Asked(name="Flo"), saga_id="flood-1", source="test", causation_id="x", event_id=held.id)
    result = await applied(processor, [Rec(c.to_json()) for c in copies] + [Rec(reused.to_json())])
    reasons = [dict(row.headers)[REASON_HEADER].split(":")[0] for row in published(result)]
    assert reasons == ["conflicting_copy"] * 50 + ["event_id_reused"]
    assert processor.parked.count(processor.engine) == 1 and result.duplicates == 0
    again = await applied(processor, [Rec(held.to_json())])
    assert again.duplicates == 1 and again.outbox == []  # the same event again: a duplicate


async def test_a_record_read_again_from_the_broker_is_a_duplicate_at_any_age(second: BatchProcessor) -> None:
    """Its partition's position knows it: no event id needed, so the ids can be forgotten early."""
    first = Rec(first_done("again-1", name="Aga").to_json(), offset=40)
    refused = Rec(b"\x00not json", offset=41)
    misplaced = json.loads(first_done("again-2").to_json()) | {"type": "Asked"}  # it belongs on toy.first
    elsewhere = Rec(json.dumps(misplaced).encode(), topic=SECOND, offset=42)
    once = await applied(second, [first, refused, elsewhere])
    assert once.applied == {"FirstDone": 1} and len(once.dead_letters) == 2
    assert second.prune_inbox(older_than_hours=0) == 3  # the event id and the refused records' markers
    again = await applied(second, [first, refused, elsewhere])  # a replay of the partition, after the window
    assert (again.duplicates, again.outbox, again.dead_letters, again.applied) == (3, [], [], {})
    assert tally(second, "Aga") == 1  # applied once
    latest = max(first.timestamp, refused.timestamp, elsewhere.timestamp)
    with second.engine.connect() as conn:
        assert second.inbox.positions(conn) == {(SECOND, 0): (43, latest, None)}


async def test_a_topic_made_again_starts_its_positions_over_whatever_its_records_timestamps(
    second: BatchProcessor,
) -> None:
    """The topic deleted and made again (a new topic id): the old position is void, whatever the
    clocks say. Records of the new topic in the same millisecond split across batches, or dated
    before anything passed (a client's clock behind), are applied, each once."""
    second.topics.ids = {SECOND: "id-before"}
    old = Rec(first_done("over-1", name="Ova").to_json(), offset=500, timestamp=5_000)
    assert (await applied(second, [old])).applied == {"FirstDone": 1}
    second.topics.ids = {SECOND: "id-now"}  # made again
    first = Rec(first_done("over-2", name="Ovb").to_json(), offset=0, timestamp=5_000)
    with pytest.raises(StartedOver) as over:
        await applied(second, [first])
    assert over.value.partitions == {(SECOND, 0): "id-now"}  # nothing applied: read again from the start
    second.restart_positions({(SECOND, 0): ("id-now", 0)})
    same_ms = Rec(first_done("over-3", name="Ovc").to_json(), offset=1, timestamp=5_000)
    dated_before = Rec(first_done("over-4", name="Ovd").to_json(), offset=2, timestamp=1)
    assert (await applied(second, [first])).applied == {"FirstDone": 1}
    assert (await applied(second, [same_ms])).applied == {"FirstDone": 1}  # the same millisecond, the next batch
    assert (await applied(second, [dated_before])).applied == {"FirstDone": 1}
    assert (await applied(second, [first, same_ms, dated_before])).duplicates == 3  # redelivered: the new position
    copy = Rec(first_done("over-2", name="Ovb").to_json(), offset=3)  # the same event re-sent
    assert (await applied(second, [copy])).duplicates == 1  # known by its id
    assert [tally(second, name) for name in ("Ova", "Ovb", "Ovc", "Ovd")] == [1] * 4  # each applied once
    with second.engine.connect() as conn:
        assert second.inbox.positions(conn)[(SECOND, 0)][::2] == (4, "id-now")


async def test_a_record_below_its_position_waits_for_its_topics_id_to_be_read_after_it_was_fetched(
    second: BatchProcessor,
) -> None:
    """Under a loop, a duplicate by position is only declared on a topic id read after the fetch."""
    second.topics.ids, second.topics.watched = {SECOND: "id-1"}, True
    second.topics.read_at = {SECOND: 0.0}
    record = Rec(first_done("verify-1", name="Vera").to_json(), offset=7)
    second.topics.fetching()
    assert (await applied(second, [record])).applied  # at or above its position: no question asked
    second.topics.fetching()
    with pytest.raises(Unverified) as unverified:
        await applied(second, [record])
    assert unverified.value.topics == {SECOND}
    second.topics.read_at[SECOND] = second.topics.fetched  # read again, after the fetch
    assert (await applied(second, [record])).duplicates == 1
