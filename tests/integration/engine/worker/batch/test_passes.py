"""What a pass does with a record it applies (engine.worker.batch.passes, engine.worker.batch.context):
the handler is given its saga's deadline, or not run once it passed; what it publishes is wrapped
under ids derived from the record, the deadline passed on; in a rebuild, the decision recorded the
first time is re-applied and not published again. The toy's steps are the vehicle."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.events import Event
from engine.participant import UnitOfWork
from engine.wire.codec import decode_envelope
from engine.wire.deadletter import dead_letters
from engine.wire.envelope import caused_id, legacy_caused_id
from engine.worker.batch.processor import BatchProcessor
from tests import databases
from tests.toy.events import FAILURES, SECOND
from tests.toy.handlers import do_second
from tests.toy.kit import (
    Rec,
    applied,
    asked,
    engine_for,
    first_done,
    outcomes,
    processor_for,
    second_failed,
    tally,
    with_deadline,
)
from tests.toy.saga import TOY, Settings


async def test_the_next_event_id_derives_from_the_consumed_one(second: BatchProcessor) -> None:
    a = (await applied(second, [Rec(first_done("ids-1", name="Ida").to_json())])).outbox[0]
    doc = json.loads(a.value)
    assert doc["causationid"] == first_done("ids-1").id
    assert doc["sagaid"] == "ids-1" and a.key == b"ids-1"
    assert doc["type"] == "SecondDone"


async def test_a_step_past_its_sagas_deadline_fails_with_deadline_exceeded_and_passes_the_deadline_on(
    settings: Settings,
) -> None:
    calls: list[str] = []

    def never(event: Any, uow: UnitOfWork[Any]) -> Sequence[Event]:
        calls.append(uow.saga_id)
        return do_second(event, uow)

    processor = processor_for("second", settings, FirstDone=never)
    late = with_deadline(first_done("late-1", name="Lee"), -1)
    (row,) = (await applied(processor, [Rec(late.to_json())])).outbox
    doc = json.loads(row.value)
    assert (doc["type"], doc["data"]["reason"]) == ("SecondFailed", "deadline_exceeded")
    assert calls == [] and tally(processor, "Lee") == 0  # the handler never ran
    assert doc["sagadeadline"] == late.model_dump(mode="json")["sagadeadline"]  # passed on
    in_time = with_deadline(first_done("early-1", name="Eva"), 60)
    (row,) = (await applied(processor, [Rec(in_time.to_json())])).outbox
    doc = json.loads(row.value)
    assert doc["type"] == "SecondDone" and "reason" not in doc["data"]
    assert doc["sagadeadline"] == in_time.model_dump(mode="json")["sagadeadline"]
    (row,) = (await applied(processor, [Rec(first_done("none-1", name="Nat").to_json())])).outbox
    assert "sagadeadline" not in json.loads(row.value)  # no deadline, no change


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2020-01-01T00:00:00"])
async def test_a_deadline_at_the_ends_of_time_is_taken_as_written(second: BatchProcessor, value: str) -> None:
    doc = json.loads(first_done(f"edge-deadline-{uuid.uuid4().hex[:6]}").to_json())
    doc["sagadeadline"] = value
    (row,) = (await applied(second, [Rec(json.dumps(doc).encode())])).outbox
    published = json.loads(row.value)
    assert row.topic != dead_letters(SECOND)
    passed = value.startswith("9999")
    assert (published["data"].get("reason") != "deadline_exceeded") is passed


async def test_a_compensation_is_never_cut_short_by_a_deadline(settings: Settings) -> None:
    step = processor_for("first", settings)
    await applied(step, [Rec(asked("comp-late", name="Kip").to_json())])
    compensator = processor_for("first.compensations", settings)
    failed = with_deadline(second_failed("comp-late", "Kip"), -60)
    result = await applied(compensator, [Rec(failed.to_json(), topic=FAILURES)])
    assert outcomes(result) == ["ToyFailed"] and tally(step, "Kip") == 0  # the first step undone


def rebuilt_from(first: BatchProcessor, tmp_path: Path, label: str, history: dict[str, list[Any]]) -> BatchProcessor:
    """``first``'s participant on a new, empty database, rebuilding from ``history``."""
    (tmp_path / "rebuilt").mkdir()
    fresh = databases.with_databases(Settings(data_dir=tmp_path / "rebuilt"), f"{tmp_path.name}{label}")
    return BatchProcessor(first.participant, TOY.types, engine_for("second", fresh), fresh, history=history)


async def test_a_rebuild_after_the_deadline_re_applies_the_decision_taken_in_time(
    second: BatchProcessor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebuilding comes late by nature: a recorded decision wins over the deadline, or the saga
    would get a second outcome."""
    env = with_deadline(first_done("rb-late-1", name="Rue"), 60)
    (row,) = (await applied(second, [Rec(env.to_json())])).outbox
    recorded = decode_envelope(row.value)
    assert recorded.type == "SecondDone"
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)  # the rebuild, an hour after the deadline
    rebuilt = rebuilt_from(second, tmp_path, "r", {env.id: [recorded]})
    result = await applied(rebuilt, [Rec(env.to_json())])
    assert result.outbox == [] and result.applied == {"FirstDone": 1}  # re-applied, not re-published
    assert tally(rebuilt, "Rue") == tally(second, "Rue") == 1


async def test_a_recorded_decision_published_under_an_id_derived_the_old_way_is_re_applied_not_re_published(
    second: BatchProcessor, tmp_path: Path
) -> None:
    """A rebuild's history may hold events published before the saga id was part of a caused id."""
    env = first_done("rb-legacy-1", name="Lea")
    (row,) = (await applied(second, [Rec(env.to_json())])).outbox
    published = decode_envelope(row.value)
    assert published.id == caused_id(env.sagaid, env.id, published.type)
    recorded = published.model_copy(update={"id": legacy_caused_id(env.id, published.type)})  # as the old code had it
    rebuilt = rebuilt_from(second, tmp_path, "l", {env.id: [recorded]})
    result = await applied(rebuilt, [Rec(env.to_json())])
    assert result.outbox == [] and result.applied == {"FirstDone": 1} and result.parked == 0
    assert tally(rebuilt, "Lea") == tally(second, "Lea") == 1
