"""One batch, one transaction: inbox, state and outbox, against a real database."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from capture.bootstrap import PARTICIPANTS, engine_for
from capture.saga import CAPTURE
from capture.settings import Settings
from compensations.pokeball import undo_throw
from contracts import topics
from contracts.events import DeliveryFailed, Event, PokemonCaught, PokemonEncountered, PokemonWeakened
from engine.participant import Handler, UnitOfWork
from engine.retry import RetryPolicy
from engine.wire.codec import decode_envelope
from engine.wire.deadletter import ATTEMPTS_HEADER, REASON_HEADER
from engine.wire.envelope import Envelope, caused_id, legacy_caused_id, wrap
from engine.worker.batch.errors import StartedOver, Unverified
from engine.worker.batch.processor import BatchProcessor
from engine.worker.batch.result import BatchResult
from services.pokeball.handlers import throw_pokeball
from services.pokeball.tables import PokeballRecords
from tests import databases

_OFFSETS = itertools.count(1_000_000)  # records as a partition hands them over: each further on


@dataclasses.dataclass
class Rec:
    """A record as the loop hands it over (our own Record port, not an aiokafka object)."""

    value: bytes | None
    topic: str = topics.POKEBALL
    partition: int = 0
    offset: int = dataclasses.field(default_factory=lambda: next(_OFFSETS))
    key: bytes | None = b"saga"
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))


def weakened(saga_id: str, trainer: str = "Sacha") -> Envelope:
    event = PokemonWeakened.model_validate(
        {"trainer": {"name": trainer}, "pokemon": {"name": "Caterpie", "hp": 5, "max_hp": 60, "status": "PARALYZED"},
         "hp_before": 20, "damage": 15}
    )  # fmt: skip
    return wrap(event, saga_id=saga_id, source="test", causation_id=f"cause-{saga_id}")


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return databases.with_databases(Settings(data_dir=tmp_path), tmp_path.name)


@pytest.fixture
def pokeball(local_settings: Settings) -> BatchProcessor:
    participant = PARTICIPANTS["pokeball"]
    return BatchProcessor(participant, CAPTURE.types, engine_for("pokeball", local_settings), local_settings)


def balls(processor: BatchProcessor, trainer: str) -> int | None:
    with processor.engine.connect() as conn:
        return PokeballRecords(conn).balls(trainer)


async def test_a_duplicate_record_is_not_applied_twice(pokeball: BatchProcessor) -> None:
    env = weakened("dup-1")
    first = await pokeball.apply([Rec(env.to_json(), offset=0)])
    again = await pokeball.apply([Rec(env.to_json(), offset=1)])
    same_batch = await pokeball.apply([Rec(weakened("dup-2").to_json()), Rec(weakened("dup-2").to_json())])
    assert first.applied == {"PokemonWeakened": 1} and len(first.outbox) == 1
    assert again.applied == {} and again.duplicates == 1 and again.outbox == []
    assert same_batch.applied == {"PokemonWeakened": 1} and same_batch.duplicates == 1
    assert balls(pokeball, "Sacha") == 5 - 2  # two sagas, two throws, whatever was redelivered


async def test_the_next_event_id_derives_from_the_consumed_one(pokeball: BatchProcessor) -> None:
    a = (await pokeball.apply([Rec(weakened("ids-1", trainer="Ida").to_json())])).outbox[0]
    doc = json.loads(a.value)
    assert doc["causationid"] == weakened("ids-1").id
    assert doc["sagaid"] == "ids-1" and a.key == b"ids-1"
    assert doc["type"] in ("PokemonCaught", "PokemonBrokeFree")


async def test_bad_records_become_dead_letters_and_the_rest_of_the_batch_is_applied(pokeball: BatchProcessor) -> None:
    garbage = Rec(b"\x00garbage", offset=7)
    not_ce = Rec(json.dumps({"hello": "world"}).encode(), offset=8)
    invalid = json.loads(weakened("bad-3").to_json())
    invalid["data"]["pokemon"]["name"] = "Agumon"
    unknown = json.loads(weakened("bad-4").to_json())
    unknown["type"] = "PokemonEvolved"
    wrong_topic = json.loads(weakened("bad-6").to_json())
    wrong_topic["type"] = "PokemonCaught"
    result = (await pokeball.apply(
        [garbage, not_ce, Rec(json.dumps(invalid).encode(), offset=9), Rec(json.dumps(unknown).encode(), offset=10),
         Rec(json.dumps(wrong_topic).encode(), offset=11), Rec(weakened("good-5", trainer="Gail").to_json(), offset=12)]
    ))  # fmt: skip
    assert result.applied == {"PokemonWeakened": 1}
    assert result.skipped == 0
    dead = [row for row in result.outbox if row.topic == topics.dead_letters(topics.POKEBALL)]
    reasons = [dict(row.headers)[REASON_HEADER] for row in dead]
    kinds = ["not_json", "not_cloudevent", "invalid_data", "unknown_type", "wrong_topic"]
    assert [r.split(":")[0] for r in reasons] == kinds
    assert "Agumon" in reasons[2]
    assert dead[0].value == b"\x00garbage" and dict(dead[0].headers)["pokesaga.dlq.offset"] == "7"


def flaky(failures: int, then: Handler | None = None, error: type[Exception] = RuntimeError) -> Handler:
    """A handler that fails ``failures`` times (after a write that must roll back), then runs ``then``."""
    calls = {"n": 0}

    def handler(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        calls["n"] += 1
        name = event.trainer.name
        uow.records.save_bag(name, uow.records.bag(name, 5))  # a write that must be rolled back with the attempt
        if calls["n"] <= failures or then is None:
            raise error(f"boom {calls['n']}")
        return then(event, uow)

    return handler


def processor_for(name: str, settings: Settings, **handlers: Handler) -> BatchProcessor:
    participant = dataclasses.replace(PARTICIPANTS[name], handlers={**PARTICIPANTS[name].handlers, **handlers})
    return BatchProcessor(participant, CAPTURE.types, engine_for(participant.service, settings), settings)


FAST = RetryPolicy(initial_interval=0.001, maximum_interval=0.002, maximum_attempts=3)


async def retried(processor: BatchProcessor, first: BatchResult, timeout: float = 30) -> BatchResult:
    """What the loop does after ``first``: apply the parked records as they fall due, until none is
    left; everything merged into ``first``."""
    deadline = time.monotonic() + timeout
    while processor.parked.count(processor.engine):
        assert time.monotonic() < deadline, "records still parked"
        records, _ = processor.parked_records(100)
        if records:
            first.merge(await processor.apply(records))
    return first


def outcomes(result: BatchResult) -> list[str]:
    """What a batch published, without the retry notices."""
    return [row.type for row in result.outbox if row.topic != CAPTURE.retries_topic]


async def test_a_transient_error_is_retried_and_the_step_then_succeeds(local_settings: Settings) -> None:
    settings = local_settings.model_copy(update={"retry": FAST})
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(2, then=throw_pokeball))
    first = await processor.apply([Rec(weakened("flaky-1", trainer="Flo").to_json())])
    # Parked, not waited for: the batch is done, the record in the retry store, a notice said so.
    assert first.parked == 1 and first.retries == ["RuntimeError"] and outcomes(first) == []
    (notice,) = first.outbox
    doc = json.loads(notice.value)
    assert (notice.topic, doc["type"], doc["sagaid"]) == ("capture.retries", "pokesaga.StepRetrying", "flaky-1")
    assert {k: doc["data"][k] for k in ("participant", "attempt", "maximum_attempts", "error")} == {
        "participant": "pokeball", "attempt": 1, "maximum_attempts": 3, "error": "RuntimeError: boom 1",
    }  # fmt: skip
    result = await retried(processor, first)
    assert result.retries == ["RuntimeError", "RuntimeError"]
    assert outcomes(result) in (["PokemonCaught"], ["PokemonBrokeFree"])
    assert balls(processor, "Flo") == 4  # one throw, whatever the failed attempts did


async def test_a_step_whose_retries_run_out_publishes_its_failure_event(local_settings: Settings) -> None:
    settings = local_settings.model_copy(update={"retry": FAST})
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(99))
    result = await retried(processor, (await processor.apply([Rec(weakened("exhaust-1", trainer="Bea").to_json())])))
    (row,) = [row for row in result.outbox if row.topic != CAPTURE.retries_topic]
    doc = json.loads(row.value)
    assert (row.topic, doc["type"]) == (topics.FAILURES, "PokemonBrokeFree")
    assert doc["data"]["reason"] == "retries_exhausted" and doc["data"]["failed_step"] == "pokeball"
    assert doc["data"]["detail"] == "RuntimeError: boom 3 after 3 attempts"
    assert result.retries == ["RuntimeError"] * 2 and result.failures == ["retries_exhausted"]
    assert balls(processor, "Bea") is None  # every attempt rolled back, no ball used
    with processor.engine.connect() as conn:  # the step's own record of the failure, beside the event
        throw = PokeballRecords(conn).get_throw("exhaust-1")
    assert throw is not None and (throw["outcome"], throw["ball"]) == ("failed:retries_exhausted", None)
    again = await processor.apply([Rec(weakened("exhaust-1", trainer="Bea").to_json())])
    assert again.duplicates == 1 and again.outbox == []  # the decision is recorded in the inbox


async def test_a_non_retryable_error_fails_the_step_at_once(local_settings: Settings) -> None:
    policy = FAST.model_copy(update={"non_retryable_error_types": ("ValueError",)})
    settings = local_settings.model_copy(update={"retry": policy})
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(99, error=ValueError))
    result = await processor.apply([Rec(weakened("nonretry-1", trainer="Nia").to_json())])
    assert result.retries == [] and result.failures == ["non_retryable_error"]
    assert json.loads(result.outbox[0].value)["data"]["detail"] == "ValueError: boom 1 after 1 attempt"


def delivery_failed(saga_id: str, trainer: str) -> Envelope:
    event = DeliveryFailed.model_validate(
        {"trainer": {"name": trainer}, "pokemon": {"name": "Caterpie"}, "reason": "party_and_pc_full",
         "failed_step": "delivery"}
    )  # fmt: skip
    return wrap(event, saga_id=saga_id, source="test", causation_id=f"caught-{saga_id}")


async def test_a_compensation_retries_a_transient_error_for_as_long_as_it_takes(local_settings: Settings) -> None:
    settings = local_settings.model_copy(
        update={
            "compensation_retry": local_settings.compensation_retry.model_copy(
                update={"initial_interval": 0.001, "maximum_interval": 0.005}
            )
        }
    )
    step = processor_for("pokeball", settings)
    (await step.apply([Rec(weakened("comp-1", trainer="Cid").to_json())]))  # a throw, for the compensation to find
    processor = processor_for("pokeball.compensations", settings, DeliveryFailed=flaky(12, then=undo_throw))
    result = await processor.apply([Rec(delivery_failed("comp-1", "Cid").to_json(), topic=topics.FAILURES)])
    result = await retried(processor, result)
    assert len(result.retries) == 12  # more than any step's default limit
    assert outcomes(result) == ["PokemonReleased"]


async def test_a_compensation_that_keeps_failing_is_a_dead_letter_after_its_attempts_and_its_saga_needs_an_operator(
    local_settings: Settings,
) -> None:
    settings = local_settings.model_copy(
        update={
            "compensation_attempts": 4,
            "compensation_retry": local_settings.compensation_retry.model_copy(
                update={"initial_interval": 0.001, "maximum_interval": 0.002}
            ),
        }
    )
    step = processor_for("pokeball", settings)
    (await step.apply([Rec(weakened("stuck-1", trainer="Stu").to_json())]))
    processor = processor_for("pokeball.compensations", settings, DeliveryFailed=flaky(10**9))
    result = await retried(
        processor, (await processor.apply([Rec(delivery_failed("stuck-1", "Stu").to_json(), topic=topics.FAILURES)]))
    )
    assert len(result.retries) == 3  # attempts 1 to 3 put off; the 4th is the last
    (row,) = [r for r in result.outbox if r.topic != CAPTURE.retries_topic]
    headers = dict(row.headers)
    assert row.topic == topics.dead_letters(topics.FAILURES)
    assert headers[REASON_HEADER] == "compensation_failed: RuntimeError: boom 4 after 4 attempts"
    assert headers[ATTEMPTS_HEADER] == "4"
    assert result.operator == {"stuck-1": (headers[REASON_HEADER], topics.dead_letters(topics.FAILURES))}
    assert processor.parked.count(processor.engine) == 0  # it left the retries: nothing is tried again


async def test_a_compensation_whose_own_event_is_invalid_is_a_dead_letter_at_once(local_settings: Settings) -> None:
    step = processor_for("pokeball", local_settings)
    (await step.apply([Rec(weakened("full-1", trainer="Ful").to_json())]))
    failed = DeliveryFailed.model_validate(
        {"trainer": {"name": "Ful"}, "pokemon": {"name": "Caterpie"}, "reason": "party_and_pc_full",
         "failed_step": "delivery", "undone": ["delivery", "status", "combat", "pokeball"]}
    )  # fmt: skip
    envelope = wrap(failed, saga_id="full-1", source="test", causation_id="caught-full-1")
    processor = processor_for("pokeball.compensations", local_settings)
    result = await processor.apply([Rec(envelope.to_json(), topic=topics.FAILURES)])
    assert result.retries == [] and result.parked == 0
    (row,) = result.outbox
    headers = dict(row.headers)
    assert row.topic == topics.dead_letters(topics.FAILURES)
    assert headers[REASON_HEADER] == (
        "compensation_failed: ValidationError: PokemonReleased: undone: "
        "Tuple should have at most 4 items after validation, not 5 after 1 attempt"
    )
    assert headers[ATTEMPTS_HEADER] == "1"
    assert list(result.operator) == ["full-1"]
    assert balls(step, "Ful") == 4  # the refund rolled back with the attempt


async def test_a_compensation_for_a_saga_its_service_never_saw_is_a_dead_letter(local_settings: Settings) -> None:
    processor = processor_for("pokeball.compensations", local_settings)
    result = await processor.apply([Rec(delivery_failed("ghost-1", "Gus").to_json(), topic=topics.FAILURES, offset=4)])
    (row,) = result.outbox
    assert row.topic == topics.dead_letters(topics.FAILURES)
    assert dict(row.headers)[REASON_HEADER].startswith("unknown_saga: pokeball never threw in saga 'ghost-1'")
    assert result.applied == {} and result.compensations == []
    # Re-published from its dead-letter topic after a fix (a new record, further on): tried again.
    again = await processor.apply([Rec(delivery_failed("ghost-1", "Gus").to_json(), topic=topics.FAILURES, offset=5)])
    assert len(again.outbox) == 1  # not in the inbox: replayed after a fix, it is tried again


async def test_a_compensation_the_database_refuses_is_parked_as_a_dead_letter(local_settings: Settings) -> None:
    step = processor_for("pokeball", local_settings)
    saga = "refused-1"
    assert [r.type for r in (await step.apply([Rec(weakened(saga, trainer="Rex").to_json())])).outbox] == [
        "PokemonCaught"
    ]
    # The database now refuses to give Rex a ball back.
    databases.refuse_updates(local_settings, "pokeball", "bags", "NEW.trainer = 'Rex'", "refunds for Rex are refused")
    compensator = processor_for("pokeball.compensations", local_settings)
    result = await compensator.apply([Rec(delivery_failed(saga, "Rex").to_json(), topic=topics.FAILURES, offset=3)])
    (row,) = result.outbox
    assert row.topic == topics.dead_letters(topics.FAILURES)
    reason = dict(row.headers)[REASON_HEADER]
    assert reason.startswith("compensation_failed: IntegrityError") and "refused" in reason
    assert result.compensations == [] and result.retries == []
    assert balls(step, "Rex") == 4  # nothing refunded: the saga is visibly stuck, not failed-and-clean
    inbox = compensator.inbox.table
    with compensator.engine.connect() as conn:  # not in its inbox: replaying the dead letter applies it
        query = select(func.count()).select_from(inbox).where(inbox.c.consumer == "pokeball.compensations")
        assert conn.execute(query).scalar() == 0


async def test_a_record_that_keeps_failing_never_holds_its_batch(local_settings: Settings) -> None:
    """A compensation that fails for ever: the batch returns at once (its offsets can be committed),
    the record is parked with its attempt, its next attempt and its error; nothing is in the inbox."""
    processor = processor_for("pokeball.compensations", local_settings, DeliveryFailed=flaky(10**9))
    result = await processor.apply([Rec(delivery_failed("stop-1", "Sid").to_json(), topic=topics.FAILURES)])
    assert result.parked == 1 and result.next_due is not None
    with processor.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(processor.inbox.table)).scalar() == 0
        (row,) = conn.execute(select(processor.parked.table)).mappings()
    assert (row["reason"], row["attempts"], row["last_error"]) == ("retrying", 1, "RuntimeError: boom 1")
    assert row["due_at"] == pytest.approx(result.next_due)


async def test_inbox_rows_are_pruned_only_after_the_retention(pokeball: BatchProcessor) -> None:
    (await pokeball.apply([Rec(weakened("prune-1", trainer="Pru").to_json())]))
    assert pokeball.prune_inbox(older_than_hours=1) == 0  # applied just now: remembered
    assert pokeball.prune_inbox(older_than_hours=0) == 1  # past the retention: forgotten


async def test_a_large_prune_goes_a_chunk_at_a_time_and_leaves_other_consumers_and_newer_rows(
    pokeball: BatchProcessor,
) -> None:
    (await pokeball.apply([Rec(weakened(f"chunk-{n}", trainer=f"Chu{n}").to_json()) for n in range(25)]))
    table = pokeball.inbox.table
    with pokeball.engine.begin() as conn:
        conn.execute(table.update().values(received_at=0.0))  # applied long ago
        other = {"consumer": "someone.else", "saga_id": "x", "type": "PokemonWeakened", "received_at": 0.0}
        conn.execute(table.insert(), [other | {"event_id": "e1"}, other | {"event_id": "e2"}])
    (await pokeball.apply([Rec(weakened("chunk-new", trainer="Chunew").to_json())]))
    assert pokeball.inbox.prune(pokeball.engine, older_than_hours=1, chunk=10) == 25
    with pokeball.engine.connect() as conn:
        per_consumer = select(table.c.consumer, func.count()).group_by(table.c.consumer)
        left = conn.execute(per_consumer.order_by(table.c.consumer))
        assert left.all() == [("pokeball", 1), ("someone.else", 2)]


async def test_a_record_read_again_from_the_broker_is_a_duplicate_at_any_age(pokeball: BatchProcessor) -> None:
    """Its partition's position knows it: no event id needed, so the ids can be forgotten early."""
    first = Rec(weakened("again-1", trainer="Aga").to_json(), offset=40)
    refused = Rec(b"\x00not json", offset=41)
    misplaced = json.loads(weakened("again-2").to_json()) | {"type": "PokemonCaught"}  # it belongs on delivery's
    elsewhere = Rec(json.dumps(misplaced).encode(), offset=42)
    applied = await pokeball.apply([first, refused, elsewhere])
    assert applied.applied == {"PokemonWeakened": 1} and len(applied.dead_letters) == 2
    assert pokeball.prune_inbox(older_than_hours=0) == 3  # the event id and the refused records' markers
    again = await pokeball.apply([first, refused, elsewhere])  # a replay of the partition, after the window
    assert (again.duplicates, again.outbox, again.dead_letters, again.applied) == (3, [], [], {})
    assert balls(pokeball, "Aga") == pokeball.settings.starter_balls - 1  # one throw
    latest = max(first.timestamp, refused.timestamp, elsewhere.timestamp)
    with pokeball.engine.connect() as conn:
        assert pokeball.inbox.positions(conn) == {(topics.POKEBALL, 0): (43, latest, None)}


async def test_a_topic_made_again_starts_its_positions_over_whatever_its_records_timestamps(
    pokeball: BatchProcessor,
) -> None:
    """The topic deleted and made again (a new topic id): the old position is void, whatever the
    clocks say. Records of the new topic in the same millisecond split across batches, or dated
    before anything passed (a client's clock behind), are applied, each once."""
    pokeball.topics.ids = {topics.POKEBALL: "id-before"}
    old = Rec(weakened("over-1", trainer="Ova").to_json(), offset=500, timestamp=5_000)
    assert (await pokeball.apply([old])).applied == {"PokemonWeakened": 1}
    pokeball.topics.ids = {topics.POKEBALL: "id-now"}  # made again
    first = Rec(weakened("over-2", trainer="Ovb").to_json(), offset=0, timestamp=5_000)
    with pytest.raises(StartedOver) as over:
        (await pokeball.apply([first]))
    assert over.value.partitions == {(topics.POKEBALL, 0): "id-now"}  # nothing applied: read again from the start
    pokeball.restart_positions({(topics.POKEBALL, 0): ("id-now", 0)})
    same_ms = Rec(weakened("over-3", trainer="Ovc").to_json(), offset=1, timestamp=5_000)
    dated_before = Rec(weakened("over-4", trainer="Ovd").to_json(), offset=2, timestamp=1)
    assert (await pokeball.apply([first])).applied == {"PokemonWeakened": 1}
    assert (await pokeball.apply([same_ms])).applied == {"PokemonWeakened": 1}  # the same millisecond, the next batch
    assert (await pokeball.apply([dated_before])).applied == {"PokemonWeakened": 1}
    assert (await pokeball.apply([first, same_ms, dated_before])).duplicates == 3  # redelivered: the new position
    copy = Rec(weakened("over-2", trainer="Ovb").to_json(), offset=3)  # the same event re-sent
    assert (await pokeball.apply([copy])).duplicates == 1  # known by its id
    trainers = ("Ova", "Ovb", "Ovc", "Ovd")
    assert [balls(pokeball, t) for t in trainers] == [pokeball.settings.starter_balls - 1] * 4
    with pokeball.engine.connect() as conn:
        assert pokeball.inbox.positions(conn)[(topics.POKEBALL, 0)][::2] == (4, "id-now")


async def test_a_position_recorded_before_topic_ids_were_kept_adopts_the_topics_id(pokeball: BatchProcessor) -> None:
    """Positions from revision 0003 have no topic id: the topic as it is now is the one they were on."""
    assert (await pokeball.apply([Rec(weakened("adopt-1", trainer="Ada").to_json(), offset=10)])).applied
    pokeball.topics.ids = {topics.POKEBALL: "the-id"}
    assert (await pokeball.apply([Rec(weakened("adopt-1", trainer="Ada").to_json(), offset=10)])).duplicates == 1
    assert (await pokeball.apply([Rec(weakened("adopt-2", trainer="Adb").to_json(), offset=11)])).applied
    with pokeball.engine.connect() as conn:
        assert pokeball.inbox.positions(conn)[(topics.POKEBALL, 0)][::2] == (12, "the-id")


async def test_a_record_below_its_position_waits_for_its_topics_id_to_be_read_after_it_was_fetched(
    pokeball: BatchProcessor,
) -> None:
    """Under a loop, a duplicate by position is only declared on a topic id read after the fetch."""
    pokeball.topics.ids, pokeball.topics.watched = {topics.POKEBALL: "id-1"}, True
    pokeball.topics.read_at = {topics.POKEBALL: 0.0}
    record = Rec(weakened("verify-1", trainer="Vera").to_json(), offset=7)
    pokeball.topics.fetching()
    assert (await pokeball.apply([record])).applied  # at or above its position: no question asked
    pokeball.topics.fetching()
    with pytest.raises(Unverified) as unverified:
        (await pokeball.apply([record]))
    assert unverified.value.topics == {topics.POKEBALL}
    pokeball.topics.read_at[topics.POKEBALL] = pokeball.topics.fetched  # read again, after the fetch
    assert (await pokeball.apply([record])).duplicates == 1


async def test_positions_move_forward_only_and_each_partition_has_its_own(pokeball: BatchProcessor) -> None:
    a = Rec(weakened("pos-1", trainer="Poa").to_json(), partition=1, offset=10, timestamp=5)
    b = Rec(weakened("pos-2", trainer="Pob").to_json(), partition=2, offset=3, timestamp=7)
    (await pokeball.apply([a, b]))
    late = Rec(weakened("pos-3", trainer="Poc").to_json(), partition=1, offset=4, timestamp=9)  # as a zombie might
    (await pokeball.apply([late]))
    with pokeball.engine.connect() as conn:
        assert pokeball.inbox.positions(conn) == {
            (topics.POKEBALL, 1): (11, 9, None),
            (topics.POKEBALL, 2): (4, 7, None),
        }


def ordered(log: list[str], fails_for: set[str] = frozenset()) -> Handler:  # type: ignore[assignment]
    """A handler that fails while its saga is in ``fails_for``, and logs what it applied; a
    throw for PokemonWeakened, nothing for any other event."""

    def handler(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        if uow.saga_id in fails_for:
            raise RuntimeError(f"{uow.saga_id} is not ready")
        log.append(f"{uow.saga_id}:{type(event).__name__}")
        return throw_pokeball(event, uow) if isinstance(event, PokemonWeakened) else []

    return handler


UNLIMITED = RetryPolicy(initial_interval=0.001, maximum_interval=0.002, maximum_attempts=0)


async def test_later_records_of_a_parked_saga_wait_behind_it_in_order_and_other_sagas_pass(
    local_settings: Settings,
) -> None:
    """The head fails: the saga's later records (same batch and later batches) are parked behind it,
    other sagas are applied at once; when the head succeeds, the saga's records follow in order."""
    settings = local_settings.model_copy(update={"retry": UNLIMITED})
    log: list[str] = []
    failing = {"ord-s"}
    handle = ordered(log, failing)
    # This participant takes three event types of a saga, so three records of one saga can queue.
    processor = processor_for(
        "pokeball", settings, PokemonWeakened=handle, PokemonEncountered=handle, PokemonCaught=handle
    )
    head = weakened("ord-s", trainer="Ola")
    trainer, pokemon = {"name": "Ola"}, {"name": "Caterpie"}
    encountered = wrap(PokemonEncountered.model_validate({"trainer": trainer, "pokemon": pokemon}),
                       saga_id="ord-s", source="test", causation_id="e")  # fmt: skip
    caught = wrap(PokemonCaught.model_validate({"trainer": trainer, "pokemon": pokemon, "ball": "Poke", "shakes": 3}),
                  saga_id="ord-s", source="test", causation_id="c")  # fmt: skip
    batch = [Rec(head.to_json(), offset=0), Rec(weakened("ord-a", trainer="Abe").to_json(), offset=1),
             Rec(encountered.to_json(), offset=2)]  # fmt: skip
    first = await processor.apply(batch)
    second = await processor.apply([Rec(caught.to_json(), offset=3), Rec(weakened("ord-b", trainer="Bob").to_json())])
    assert log == ["ord-a:PokemonWeakened", "ord-b:PokemonWeakened"]  # they passed it
    assert (first.parked, second.parked) == (2, 1)
    with processor.engine.connect() as conn:
        table = processor.parked.table
        parked = conn.execute(select(table.c.event_id, table.c.reason).order_by(table.c.id)).all()
    assert parked == [(head.id, "retrying"), (encountered.id, "waiting"), (caught.id, "waiting")]
    # While it fails, nothing of its saga moves, however often it is tried.
    tries = 0
    deadline = time.monotonic() + 10
    while tries < 3:
        assert time.monotonic() < deadline
        records, _ = processor.parked_records(100)
        if records:
            assert records[0].id == min(r.id for r in records)
            (await processor.apply(records))
            tries += 1
    assert processor.parked.count(processor.engine) == 3 and len(log) == 2
    failing.clear()
    result = await retried(processor, BatchResult())
    assert log[2:] == ["ord-s:PokemonWeakened", "ord-s:PokemonEncountered", "ord-s:PokemonCaught"]
    assert not [row for row in result.outbox if row.topic.endswith(".dlq")]
    assert balls(processor, "Ola") == 4


async def test_two_instances_that_took_the_same_parked_record_apply_it_once(local_settings: Settings) -> None:
    """Both instances read the parked record as due; the one that comes second finds it gone (or
    put off), under the lock, and does nothing with it."""
    settings = local_settings.model_copy(update={"retry": UNLIMITED})
    calls: list[str] = []

    def counted(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        calls.append(uow.saga_id)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return throw_pokeball(event, uow)

    one = processor_for("pokeball", settings, PokemonWeakened=counted)
    two = BatchProcessor(one.participant, CAPTURE.types, engine_for("pokeball", settings), settings)
    assert (await one.apply([Rec(weakened("twice-1", trainer="Tia").to_json())])).parked == 1
    deadline = time.monotonic() + 10
    while not (due := one.parked_records(10)[0]):
        assert time.monotonic() < deadline
    seen_by_two, _ = two.parked_records(10)
    assert [r.id for r in due] == [r.id for r in seen_by_two]
    applied = await one.apply(due)
    again = await two.apply(seen_by_two)
    assert calls == ["twice-1", "twice-1"]  # one failed try, one that succeeded: never a third
    assert len(outcomes(applied)) == 1 and again.outbox == [] and again.applied == {}
    assert one.parked.count(one.engine) == 0 and balls(one, "Tia") == 4


def with_deadline(envelope: Envelope, seconds_from_now: float) -> Envelope:
    deadline = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return envelope.model_copy(update={"sagadeadline": deadline})


async def test_a_step_past_its_sagas_deadline_fails_with_deadline_exceeded_and_passes_the_deadline_on(
    local_settings: Settings,
) -> None:
    calls: list[str] = []

    def never(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        calls.append(uow.saga_id)
        return throw_pokeball(event, uow)

    processor = processor_for("pokeball", local_settings, PokemonWeakened=never)
    late = with_deadline(weakened("late-1", trainer="Lee"), -1)
    (row,) = (await processor.apply([Rec(late.to_json())])).outbox
    doc = json.loads(row.value)
    assert (doc["type"], doc["data"]["reason"]) == ("PokemonBrokeFree", "deadline_exceeded")
    assert calls == [] and balls(processor, "Lee") is None  # the handler never ran
    assert doc["sagadeadline"] == late.model_dump(mode="json")["sagadeadline"]  # passed on
    in_time = with_deadline(weakened("early-1", trainer="Eva"), 60)
    (row,) = (await processor.apply([Rec(in_time.to_json())])).outbox
    doc = json.loads(row.value)
    assert doc["type"] in ("PokemonCaught", "PokemonBrokeFree") and "reason" not in doc["data"]
    assert doc["sagadeadline"] == in_time.model_dump(mode="json")["sagadeadline"]
    (row,) = (await processor.apply([Rec(weakened("none-1", trainer="Nat").to_json())])).outbox
    assert "sagadeadline" not in json.loads(row.value)  # no deadline, no change


async def test_a_parked_record_that_reaches_its_sagas_deadline_fails_the_step(local_settings: Settings) -> None:
    settings = local_settings.model_copy(
        update={"retry": RetryPolicy(initial_interval=30, maximum_interval=30, maximum_attempts=0)}
    )
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(10**9))
    soon = with_deadline(weakened("due-1", trainer="Dov"), 1.5)
    first = await processor.apply([Rec(soon.to_json())])
    assert first.parked == 1 and first.next_due is not None
    assert first.next_due <= soon.sagadeadline.timestamp() + 0.001  # type: ignore[union-attr]
    result = await retried(processor, first)
    (row,) = outcomes_rows(result)
    doc = json.loads(row.value)
    assert (doc["type"], doc["data"]["reason"]) == ("PokemonBrokeFree", "deadline_exceeded")


async def test_a_compensation_is_never_cut_short_by_a_deadline(local_settings: Settings) -> None:
    step = processor_for("pokeball", local_settings)
    (await step.apply([Rec(weakened("comp-late", trainer="Kip").to_json())]))
    compensator = processor_for("pokeball.compensations", local_settings)
    failed = with_deadline(delivery_failed("comp-late", "Kip"), -60)
    result = await compensator.apply([Rec(failed.to_json(), topic=topics.FAILURES)])
    assert outcomes(result) == ["PokemonReleased"] and balls(step, "Kip") == 5  # the ball given back


def outcomes_rows(result: BatchResult) -> list[Any]:
    return [row for row in result.outbox if row.topic != CAPTURE.retries_topic]


async def test_a_record_reusing_the_id_of_another_sagas_parked_record_is_a_dead_letter(
    local_settings: Settings,
) -> None:
    settings = local_settings.model_copy(update={"retry": UNLIMITED})
    processor = processor_for("pokeball", settings, PokemonWeakened=ordered([], {"held-1"}))
    held = weakened("held-1", trainer="Hal")
    assert (await processor.apply([Rec(held.to_json())])).parked == 1
    forged = weakened("other-1", trainer="Ozzy").model_copy(update={"id": held.id})
    result = await processor.apply([Rec(forged.to_json())])
    (row,) = outcomes_rows(result)
    assert dict(row.headers)[REASON_HEADER].startswith("event_id_reused: event id")
    assert processor.parked.count(processor.engine) == 1 and balls(processor, "Ozzy") is None


async def test_a_rebuild_after_the_deadline_re_applies_the_decision_taken_in_time(
    local_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebuilding comes late by nature: a recorded decision wins over the deadline, or the saga
    would get a second outcome."""
    first = processor_for("pokeball", local_settings)
    env = with_deadline(weakened("rb-late-1", trainer="Rue"), 60)
    (row,) = (await first.apply([Rec(env.to_json())])).outbox
    recorded = decode_envelope(row.value)
    assert recorded.type in ("PokemonCaught", "PokemonBrokeFree")
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)  # the rebuild, an hour after the deadline
    fresh = databases.with_databases(Settings(data_dir=tmp_path / "rebuilt"), f"{tmp_path.name}r")
    (tmp_path / "rebuilt").mkdir()
    rebuilt = BatchProcessor(
        first.participant, CAPTURE.types, engine_for("pokeball", fresh), fresh, history={env.id: [recorded]}
    )
    result = await rebuilt.apply([Rec(env.to_json())])
    assert result.outbox == [] and result.applied == {"PokemonWeakened": 1}  # re-applied, not re-published
    assert balls(rebuilt, "Rue") == balls(first, "Rue")


async def test_a_recorded_decision_published_under_an_id_derived_the_old_way_is_re_applied_not_re_published(
    local_settings: Settings, tmp_path: Path
) -> None:
    """A rebuild's history may hold events published before the saga id was part of a caused id."""
    first = processor_for("pokeball", local_settings)
    env = weakened("rb-legacy-1", trainer="Lea")
    (row,) = (await first.apply([Rec(env.to_json())])).outbox
    published = decode_envelope(row.value)
    assert published.id == caused_id(env.sagaid, env.id, published.type)
    recorded = published.model_copy(update={"id": legacy_caused_id(env.id, published.type)})  # as the old code had it
    fresh = databases.with_databases(Settings(data_dir=tmp_path / "rebuilt"), f"{tmp_path.name}l")
    (tmp_path / "rebuilt").mkdir()
    rebuilt = BatchProcessor(
        first.participant, CAPTURE.types, engine_for("pokeball", fresh), fresh, history={env.id: [recorded]}
    )
    result = await rebuilt.apply([Rec(env.to_json())])
    assert result.outbox == [] and result.applied == {"PokemonWeakened": 1} and result.parked == 0
    assert balls(rebuilt, "Lea") == balls(first, "Lea")


async def test_an_event_copied_under_its_id_derived_the_other_way_is_a_duplicate_not_a_conflicting_copy(
    pokeball: BatchProcessor,
) -> None:
    """An upstream participant that publishes one event again across an upgrade (once as the old
    code derived its id, once as the new one does): the copy is the same event."""
    new = weakened("copy-1", trainer="Cal")
    old = new.model_copy(update={"id": legacy_caused_id(new.causationid or "", new.type)})
    assert old.id != new.id
    first = await pokeball.apply([Rec(old.to_json())])
    again = await pokeball.apply([Rec(new.to_json())])
    assert first.applied == {"PokemonWeakened": 1} and len(first.outbox) == 1
    assert again.applied == {} and again.duplicates == 1 and again.outbox == []
    other = new.model_copy(update={"id": str(uuid.uuid4())})  # not derived from the cause: a conflicting copy
    (dead,) = (await pokeball.apply([Rec(other.to_json())])).outbox
    assert dict(dead.headers)[REASON_HEADER].startswith("conflicting_copy: ")
    assert balls(pokeball, "Cal") == 5 - 1


async def test_a_record_waiting_behind_a_head_put_off_by_another_instance_stays_behind_it(
    local_settings: Settings,
) -> None:
    """Two instances read [head, waiting] as due; the first tries the head, which fails again and is
    put off; the second, with its stale list, must apply neither."""
    policy = RetryPolicy(initial_interval=0.001, backoff_coefficient=1000, maximum_interval=60, maximum_attempts=0)
    settings = local_settings.model_copy(update={"retry": policy})
    log: list[str] = []
    failing = {"race-s"}
    handle = ordered(log, failing)
    one = processor_for("pokeball", settings, PokemonWeakened=handle, PokemonEncountered=handle)
    two = BatchProcessor(one.participant, CAPTURE.types, engine_for("pokeball", settings), settings)
    head = weakened("race-s", trainer="Ola")
    encountered = wrap(PokemonEncountered.model_validate({"trainer": {"name": "Ola"}, "pokemon": {"name": "Caterpie"}}),
                       saga_id="race-s", source="test", causation_id="e")  # fmt: skip
    assert (await one.apply([Rec(head.to_json(), offset=0), Rec(encountered.to_json(), offset=1)])).parked == 2
    deadline = time.monotonic() + 10
    while not (due := one.parked_records(10)[0]):
        assert time.monotonic() < deadline
    stale, _ = two.parked_records(10)
    assert [r.id for r in due] == [r.id for r in stale] and len(due) == 2
    (await one.apply(due))  # the head fails again: put off a second; the waiting record kept behind it
    (await two.apply(stale))
    assert log == [] and one.parked.count(one.engine) == 2
    # And alone, as the loop's last resort applies records: the waiting record does not move either.
    (await two.apply(stale[1:]))
    assert log == []
    failing.clear()
    await retried(one, BatchResult(), timeout=90)
    assert log == ["race-s:PokemonWeakened", "race-s:PokemonEncountered"]


async def test_a_retry_put_off_before_the_clock_stepped_back_is_not_held_up_by_the_step(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = local_settings.model_copy(
        update={"retry": RetryPolicy(initial_interval=0.01, maximum_interval=0.01, maximum_attempts=0)}
    )
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(1, then=throw_pokeball))
    assert (await processor.apply([Rec(weakened("clk-1", trainer="Cal").to_json())])).parked == 1
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # the wall clock steps back an hour
    records, _ = processor.parked_records(10)
    assert len(records) == 1  # due now, not in an hour
    assert outcomes(await processor.apply(records)) in (["PokemonCaught"], ["PokemonBrokeFree"])


async def test_copies_of_a_parked_record_are_refused_as_if_it_were_applied(local_settings: Settings) -> None:
    """While a saga's record is parked, a client's copies of it under new ids, or another event
    reusing its id, are dead letters: the parked table cannot be flooded, nothing is dropped."""
    settings = local_settings.model_copy(update={"retry": UNLIMITED})
    handle = ordered([], {"flood-1"})
    processor = processor_for("pokeball", settings, PokemonWeakened=handle, PokemonEncountered=handle)
    held = weakened("flood-1", trainer="Flo")
    assert (await processor.apply([Rec(held.to_json())])).parked == 1
    copies = [held.model_copy(update={"id": f"copy-{n}"}) for n in range(50)]
    reused = wrap(PokemonEncountered.model_validate({"trainer": {"name": "Flo"}, "pokemon": {"name": "Caterpie"}}),
                  saga_id="flood-1", source="test", causation_id="x", event_id=held.id)  # fmt: skip
    result = await processor.apply([Rec(c.to_json()) for c in copies] + [Rec(reused.to_json())])
    reasons = [dict(row.headers)[REASON_HEADER].split(":")[0] for row in outcomes_rows(result)]
    assert reasons == ["conflicting_copy"] * 50 + ["event_id_reused"]
    assert processor.parked.count(processor.engine) == 1 and result.duplicates == 0
    again = await processor.apply([Rec(held.to_json())])
    assert again.duplicates == 1 and again.outbox == []  # the same event again: a duplicate


@pytest.mark.parametrize("value", ["1700000000", "2020-01-01", "0", "x" * 10_000, 12, True, [], {"at": 1}])
async def test_a_deadline_that_is_no_rfc_3339_date_time_is_a_dead_letter(pokeball: BatchProcessor, value: Any) -> None:
    doc = json.loads(weakened(f"bad-deadline-{uuid.uuid4().hex[:6]}").to_json())
    doc["sagadeadline"] = value
    (row,) = (await pokeball.apply([Rec(json.dumps(doc).encode())])).outbox
    assert row.topic == topics.dead_letters(topics.POKEBALL)
    assert "sagadeadline" in dict(row.headers)[REASON_HEADER]


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2020-01-01T00:00:00"])
async def test_a_deadline_at_the_ends_of_time_is_taken_as_written(pokeball: BatchProcessor, value: str) -> None:
    doc = json.loads(weakened(f"edge-deadline-{uuid.uuid4().hex[:6]}").to_json())
    doc["sagadeadline"] = value
    (row,) = (await pokeball.apply([Rec(json.dumps(doc).encode())])).outbox
    published = json.loads(row.value)
    assert row.topic != topics.dead_letters(topics.POKEBALL)
    passed = value.startswith("9999")
    assert (published["data"].get("reason") != "deadline_exceeded") is passed


class Indescribable(Exception):
    """An error that fails again when anyone tries to say what it is: the careful pass breaks on it."""

    def __str__(self) -> str:
        raise RuntimeError("cannot even describe this")


async def test_a_parked_record_that_breaks_the_careful_pass_is_dead_lettered_through_the_outbox_and_leaves_the_parked(
    local_settings: Settings,
) -> None:
    """The last rung of the ladder: a record that cannot be applied even alone gets its dead letter
    written to the outbox (so a crash before it is published loses nothing), in the transaction
    that takes it out of the parked records; the record behind it in its saga becomes the head."""
    settings = local_settings.model_copy(update={"retry": FAST})
    first = processor_for("pokeball", settings, PokemonWeakened=flaky(1, then=throw_pokeball))
    assert (await first.apply([Rec(weakened("broken-1", trainer="Bro").to_json())])).parked == 1

    def breaks(event: Any, uow: Any) -> Any:
        raise Indescribable()

    broken = processor_for("pokeball", settings, PokemonWeakened=breaks)
    deadline = time.monotonic() + 30
    records: Sequence[Any] = []
    while not records:
        assert time.monotonic() < deadline, "the parked record never fell due"
        records, _ = broken.parked_records(10)
    result = await broken.apply(records)
    (row,) = result.outbox
    assert row.id != 0 and row.topic == topics.dead_letters(topics.POKEBALL)
    assert dict(row.headers)[REASON_HEADER].startswith("internal_error: RuntimeError: cannot even describe this")
    assert row.id in [r.id for r in broken.pending()]  # in the outbox until published
    assert broken.parked.count(broken.engine) == 0
