"""One batch, one transaction: inbox, state and outbox, against a real database."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from contracts import topics
from contracts.envelope import Envelope, wrap
from contracts.events import Event, PokemonWeakened
from runtime.bootstrap import PARTICIPANTS, engine_for
from runtime.participant import UnitOfWork
from runtime.processing import REASON_HEADER, BatchProcessor
from runtime.settings import Settings
from services.pokeball.tables import PokeballRecords


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
    return Settings(data_dir=tmp_path)


@pytest.fixture
def pokeball(local_settings: Settings) -> BatchProcessor:
    participant = PARTICIPANTS["pokeball"]
    return BatchProcessor(participant, engine_for("pokeball", local_settings), local_settings)


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
    result = pokeball.process(
        [garbage, not_ce, Rec(json.dumps(invalid).encode()), Rec(json.dumps(unknown).encode()),
         Rec(weakened("good-5", trainer="Gail").to_json())]
    )  # fmt: skip
    assert result.applied == {"PokemonWeakened": 1}
    assert result.skipped == 1  # unknown type: skipped and counted, not a dead letter
    dead = [row for row in result.outbox if row.topic == topics.dead_letters(topics.POKEBALL)]
    reasons = [dict(row.headers)[REASON_HEADER] for row in dead]
    assert [r.split(":")[0] for r in reasons] == ["not_json", "not_cloudevent", "invalid_data"]
    assert "Agumon" in reasons[2]
    assert dead[0].value == b"\x00garbage" and dict(dead[0].headers)["pokesaga.dlq.offset"] == "7"


def test_a_failing_handler_dead_letters_its_record_and_rolls_back_only_that_record(
    local_settings: Settings,
) -> None:
    def explode(event: Event, uow: UnitOfWork[Any]) -> list[Event]:
        uow.records.bag(event.trainer.name, 5)  # a write that must be rolled back
        raise RuntimeError("boom")

    base = PARTICIPANTS["pokeball"]
    participant = dataclasses.replace(base, handlers={"PokemonWeakened": explode})
    processor = BatchProcessor(participant, engine_for("pokeball", local_settings), local_settings)
    result = processor.process([Rec(weakened("boom-1", trainer="Bea").to_json())])
    assert result.applied == {}
    assert result.dead_letters == ["handler_error: RuntimeError: boom"]
    assert balls(processor, "Bea") is None
    with processor.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(processor.inbox)).scalar() == 0
