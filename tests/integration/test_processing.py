"""One batch, one transaction: inbox, state and outbox, against a real database."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from capture.bootstrap import PARTICIPANTS, engine_for
from capture.saga import CAPTURE
from capture.settings import Settings
from compensations.pokeball import undo_throw
from contracts import topics
from contracts.events import DeliveryFailed, Event, PokemonWeakened
from engine.deadletters import REASON_HEADER
from engine.envelope import Envelope, wrap
from engine.participant import Handler, UnitOfWork
from engine.processing import BatchProcessor, Interrupted
from engine.retry import RetryPolicy
from services.pokeball.handlers import throw_pokeball
from services.pokeball.tables import PokeballRecords
from tests import databases


@dataclasses.dataclass
class Rec:
    """A record as the loop hands it over (our own Record port, not an aiokafka object)."""

    value: bytes | None
    topic: str = topics.POKEBALL
    partition: int = 0
    offset: int = 0
    key: bytes | None = b"saga"
    headers: tuple[tuple[str, bytes], ...] = ()


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


def test_a_duplicate_record_is_not_applied_twice(pokeball: BatchProcessor) -> None:
    env = weakened("dup-1")
    first = pokeball.process([Rec(env.to_json(), offset=0)])
    again = pokeball.process([Rec(env.to_json(), offset=1)])
    same_batch = pokeball.process([Rec(weakened("dup-2").to_json()), Rec(weakened("dup-2").to_json())])
    assert first.applied == {"PokemonWeakened": 1} and len(first.outbox) == 1
    assert again.applied == {} and again.duplicates == 1 and again.outbox == []
    assert same_batch.applied == {"PokemonWeakened": 1} and same_batch.duplicates == 1
    assert balls(pokeball, "Sacha") == 5 - 2  # two sagas, two throws, whatever was redelivered


def test_the_next_event_id_derives_from_the_consumed_one(pokeball: BatchProcessor) -> None:
    a = pokeball.process([Rec(weakened("ids-1", trainer="Ida").to_json())]).outbox[0]
    doc = json.loads(a.value)
    assert doc["causationid"] == weakened("ids-1").id
    assert doc["sagaid"] == "ids-1" and a.key == b"ids-1"
    assert doc["type"] in ("PokemonCaught", "PokemonBrokeFree")


def test_bad_records_become_dead_letters_and_the_rest_of_the_batch_is_applied(pokeball: BatchProcessor) -> None:
    garbage = Rec(b"\x00garbage", offset=7)
    not_ce = Rec(json.dumps({"hello": "world"}).encode(), offset=8)
    invalid = json.loads(weakened("bad-3").to_json())
    invalid["data"]["pokemon"]["name"] = "Agumon"
    unknown = json.loads(weakened("bad-4").to_json())
    unknown["type"] = "PokemonEvolved"
    wrong_topic = json.loads(weakened("bad-6").to_json())
    wrong_topic["type"] = "PokemonCaught"
    result = pokeball.process(
        [garbage, not_ce, Rec(json.dumps(invalid).encode(), offset=9), Rec(json.dumps(unknown).encode(), offset=10),
         Rec(json.dumps(wrong_topic).encode(), offset=11), Rec(weakened("good-5", trainer="Gail").to_json(), offset=12)]
    )  # fmt: skip
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
        uow.records.bag(event.trainer.name, 5)  # a write that must be rolled back with the attempt
        if calls["n"] <= failures or then is None:
            raise error(f"boom {calls['n']}")
        return then(event, uow)

    return handler


def processor_for(name: str, settings: Settings, **handlers: Handler) -> BatchProcessor:
    participant = dataclasses.replace(PARTICIPANTS[name], handlers={**PARTICIPANTS[name].handlers, **handlers})
    return BatchProcessor(participant, CAPTURE.types, engine_for(participant.service, settings), settings)


FAST = RetryPolicy(initial_interval=0.001, maximum_interval=0.002, maximum_attempts=3)


def test_a_transient_error_is_retried_and_the_step_then_succeeds(local_settings: Settings) -> None:
    settings = local_settings.model_copy(update={"retry": FAST})
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(2, then=throw_pokeball))
    result = processor.process([Rec(weakened("flaky-1", trainer="Flo").to_json())])
    assert result.retries == ["RuntimeError", "RuntimeError"]
    assert [row.type for row in result.outbox] in (["PokemonCaught"], ["PokemonBrokeFree"])
    assert balls(processor, "Flo") == 4  # one throw, whatever the failed attempts did


def test_a_step_whose_retries_run_out_publishes_its_failure_event(local_settings: Settings) -> None:
    settings = local_settings.model_copy(update={"retry": FAST})
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(99))
    result = processor.process([Rec(weakened("exhaust-1", trainer="Bea").to_json())])
    (row,) = result.outbox
    doc = json.loads(row.value)
    assert (row.topic, doc["type"]) == (topics.FAILURES, "PokemonBrokeFree")
    assert doc["data"]["reason"] == "retries_exhausted" and doc["data"]["failed_step"] == "pokeball"
    assert doc["data"]["detail"] == "RuntimeError: boom 3 after 3 attempts"
    assert result.retries == ["RuntimeError"] * 2 and result.failures == ["retries_exhausted"]
    assert balls(processor, "Bea") is None  # every attempt rolled back, no ball used
    with processor.engine.connect() as conn:  # the step's own record of the failure, beside the event
        throw = PokeballRecords(conn).get_throw("exhaust-1")
    assert throw is not None and (throw["outcome"], throw["ball"]) == ("failed:retries_exhausted", None)
    again = processor.process([Rec(weakened("exhaust-1", trainer="Bea").to_json())])
    assert again.duplicates == 1 and again.outbox == []  # the decision is recorded in the inbox


def test_a_non_retryable_error_fails_the_step_at_once(local_settings: Settings) -> None:
    policy = FAST.model_copy(update={"non_retryable_error_types": ("ValueError",)})
    settings = local_settings.model_copy(update={"retry": policy})
    processor = processor_for("pokeball", settings, PokemonWeakened=flaky(99, error=ValueError))
    result = processor.process([Rec(weakened("nonretry-1", trainer="Nia").to_json())])
    assert result.retries == [] and result.failures == ["non_retryable_error"]
    assert json.loads(result.outbox[0].value)["data"]["detail"] == "ValueError: boom 1 after 1 attempt"


def delivery_failed(saga_id: str, trainer: str) -> Envelope:
    event = DeliveryFailed.model_validate(
        {"trainer": {"name": trainer}, "pokemon": {"name": "Caterpie"}, "reason": "party_and_pc_full",
         "failed_step": "delivery"}
    )  # fmt: skip
    return wrap(event, saga_id=saga_id, source="test", causation_id=f"caught-{saga_id}")


def test_a_compensation_retries_a_transient_error_for_as_long_as_it_takes(local_settings: Settings) -> None:
    settings = local_settings.model_copy(
        update={
            "compensation_retry": local_settings.compensation_retry.model_copy(
                update={"initial_interval": 0.001, "maximum_interval": 0.005}
            )
        }
    )
    step = processor_for("pokeball", settings)
    step.process([Rec(weakened("comp-1", trainer="Cid").to_json())])  # a throw, for the compensation to find
    processor = processor_for("pokeball.compensations", settings, DeliveryFailed=flaky(12, then=undo_throw))
    result = processor.process([Rec(delivery_failed("comp-1", "Cid").to_json(), topic=topics.FAILURES)])
    assert len(result.retries) == 12  # more than any step's default limit
    assert [row.type for row in result.outbox] == ["PokemonReleased"]


def test_a_compensation_for_a_saga_its_service_never_saw_is_a_dead_letter(local_settings: Settings) -> None:
    processor = processor_for("pokeball.compensations", local_settings)
    result = processor.process([Rec(delivery_failed("ghost-1", "Gus").to_json(), topic=topics.FAILURES, offset=4)])
    (row,) = result.outbox
    assert row.topic == topics.dead_letters(topics.FAILURES)
    assert dict(row.headers)[REASON_HEADER].startswith("unknown_saga: pokeball never threw in saga 'ghost-1'")
    assert result.applied == {} and result.compensations == []
    again = processor.process([Rec(delivery_failed("ghost-1", "Gus").to_json(), topic=topics.FAILURES, offset=4)])
    assert len(again.outbox) == 1  # not in the inbox: replayed after a fix, it is tried again


def test_a_compensation_the_database_refuses_is_parked_as_a_dead_letter(local_settings: Settings) -> None:
    step = processor_for("pokeball", local_settings)
    saga = "refused-1"
    assert [r.type for r in step.process([Rec(weakened(saga, trainer="Rex").to_json())]).outbox] == ["PokemonCaught"]
    # The database now refuses to give Rex a ball back.
    databases.refuse_updates(local_settings, "pokeball", "bags", "NEW.trainer = 'Rex'", "refunds for Rex are refused")
    compensator = processor_for("pokeball.compensations", local_settings)
    result = compensator.process([Rec(delivery_failed(saga, "Rex").to_json(), topic=topics.FAILURES, offset=3)])
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


def test_a_stop_request_interrupts_a_retrying_batch_and_commits_nothing(local_settings: Settings) -> None:
    processor = processor_for("pokeball.compensations", local_settings, DeliveryFailed=flaky(10**9))
    timer = threading.Timer(0.3, processor.stopping.set)
    timer.start()
    with pytest.raises(Interrupted):
        processor.process([Rec(delivery_failed("stop-1", "Sid").to_json(), topic=topics.FAILURES)])
    with processor.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(processor.inbox.table)).scalar() == 0


def test_inbox_rows_are_pruned_only_after_the_retention(pokeball: BatchProcessor) -> None:
    pokeball.process([Rec(weakened("prune-1", trainer="Pru").to_json())])
    assert pokeball.prune_inbox(older_than_hours=1) == 0  # applied just now: remembered
    assert pokeball.prune_inbox(older_than_hours=0) == 1  # past the retention: forgotten
