"""When a record's handler fails (engine.worker.batch.failure, through the careful pass): parked to
be retried with a notice, its batch never held; a step that runs out of attempts, fails for good or
outlives its saga's deadline publishes its failure event; a compensation is tried for as long as it
takes, and one that cannot be done is a dead letter and its saga needs an operator.
The toy's steps are the vehicle: their tallies and marks say what was applied, rolled back, undone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from engine import Event, UnitOfWork
from engine.retry import RetryPolicy
from engine.wire.deadletter import ATTEMPTS_HEADER, REASON_HEADER, dead_letters
from tests import databases
from tests.toy.events import FAILURES, ToyFailed, ToyFailure
from tests.toy.handlers import do_second, undo_first
from tests.toy.kit import (
    FAST,
    Rec,
    applied,
    asked,
    first_done,
    flaky,
    marked,
    outcomes,
    processor_for,
    published,
    retried,
    second_failed,
    tally,
    with_deadline,
)
from tests.toy.saga import TOY, Settings


async def test_a_transient_error_is_retried_and_the_step_then_succeeds(settings: Settings) -> None:
    settings = settings.model_copy(update={"retry": FAST})
    processor = processor_for("second", settings, FirstDone=flaky(2, then=do_second))
    first = await applied(processor, [Rec(first_done("flaky-1", name="Flo").to_json())])
    # Parked, not waited for: the batch is done, the record in the retry store, a notice said so.
    assert first.parked == 1 and first.retries == ["RuntimeError"] and outcomes(first) == []
    (notice,) = first.outbox
    doc = json.loads(notice.value)
    assert (notice.topic, doc["type"], doc["sagaid"]) == (TOY.retries_topic, "pokesaga.StepRetrying", "flaky-1")
    assert {k: doc["data"][k] for k in ("participant", "attempt", "maximum_attempts", "error")} == {
        "participant": "second", "attempt": 1, "maximum_attempts": 3, "error": "RuntimeError: boom 1",
    }  # fmt: skip
    result = await retried(processor, first)
    assert result.retries == ["RuntimeError", "RuntimeError"]
    assert outcomes(result) == ["SecondDone"]
    assert tally(processor, "Flo") == 1  # applied once, whatever the failed attempts did


async def test_a_step_whose_retries_run_out_publishes_its_failure_event(settings: Settings) -> None:
    settings = settings.model_copy(update={"retry": FAST})
    processor = processor_for("second", settings, FirstDone=flaky(99))
    result = await retried(processor, await applied(processor, [Rec(first_done("exhaust-1", name="Bea").to_json())]))
    (row,) = published(result)
    doc = json.loads(row.value)
    assert (row.topic, doc["type"]) == (FAILURES, "SecondFailed")
    assert doc["data"]["reason"] == "retries_exhausted" and doc["data"]["failed_step"] == "second"
    assert doc["data"]["detail"] == "RuntimeError: boom 3 after 3 attempts"
    assert result.retries == ["RuntimeError"] * 2 and result.failures == ["retries_exhausted"]
    assert tally(processor, "Bea") == 0  # every attempt rolled back
    assert marked(processor, "exhaust-1") == "failed:retries_exhausted"  # the step's own record, beside the event
    again = await applied(processor, [Rec(first_done("exhaust-1", name="Bea").to_json())])
    assert again.duplicates == 1 and again.outbox == []  # the decision is recorded in the inbox


async def test_a_non_retryable_error_fails_the_step_at_once(settings: Settings) -> None:
    policy = FAST.model_copy(update={"non_retryable_error_types": ("ValueError",)})
    settings = settings.model_copy(update={"retry": policy})
    processor = processor_for("second", settings, FirstDone=flaky(99, error=ValueError))
    result = await applied(processor, [Rec(first_done("nonretry-1", name="Nia").to_json())])
    assert result.retries == [] and result.failures == ["non_retryable_error"]
    assert json.loads(result.outbox[0].value)["data"]["detail"] == "ValueError: boom 1 after 1 attempt"


async def test_a_record_that_keeps_failing_never_holds_its_batch(settings: Settings) -> None:
    """A compensation that fails for ever: the batch returns at once (its offsets can be committed),
    the record is parked with its attempt, its next attempt and its error; nothing is in the inbox."""
    processor = processor_for("first.compensations", settings, SecondFailed=flaky(10**9))
    result = await applied(processor, [Rec(second_failed("stop-1", "Sid").to_json(), topic=FAILURES)])
    assert result.parked == 1 and result.next_due is not None
    with processor.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(processor.inbox.table)).scalar() == 0
        (row,) = conn.execute(select(processor.parked.table)).mappings()
    assert (row["reason"], row["attempts"], row["last_error"]) == ("retrying", 1, "RuntimeError: boom 1")
    assert row["due_at"] == pytest.approx(result.next_due)


async def test_a_compensation_retries_a_transient_error_for_as_long_as_it_takes(settings: Settings) -> None:
    quick = settings.compensation_retry.model_copy(update={"initial_interval": 0.001, "maximum_interval": 0.005})
    settings = settings.model_copy(update={"compensation_retry": quick})
    step = processor_for("first", settings)
    await applied(step, [Rec(asked("comp-1", name="Cid").to_json())])  # a first step, for the compensation to undo
    processor = processor_for("first.compensations", settings, SecondFailed=flaky(12, then=undo_first))
    result = await applied(processor, [Rec(second_failed("comp-1", "Cid").to_json(), topic=FAILURES)])
    result = await retried(processor, result)
    assert len(result.retries) == 12  # more than any step's default limit
    assert outcomes(result) == ["ToyFailed"]


async def test_a_compensation_that_keeps_failing_is_a_dead_letter_after_its_attempts_and_its_saga_needs_an_operator(
    settings: Settings,
) -> None:
    quick = settings.compensation_retry.model_copy(update={"initial_interval": 0.001, "maximum_interval": 0.002})
    settings = settings.model_copy(update={"compensation_attempts": 4, "compensation_retry": quick})
    step = processor_for("first", settings)
    await applied(step, [Rec(asked("stuck-1", name="Stu").to_json())])
    processor = processor_for("first.compensations", settings, SecondFailed=flaky(10**9))
    result = await retried(
        processor, await applied(processor, [Rec(second_failed("stuck-1", "Stu").to_json(), topic=FAILURES)])
    )
    assert len(result.retries) == 3  # attempts 1 to 3 put off; the 4th is the last
    (row,) = published(result)
    headers = dict(row.headers)
    assert row.topic == dead_letters(FAILURES)
    assert headers[REASON_HEADER] == "compensation_failed: RuntimeError: boom 4 after 4 attempts"
    assert headers[ATTEMPTS_HEADER] == "4"
    assert result.operator == {"stuck-1": (headers[REASON_HEADER], dead_letters(FAILURES))}
    assert processor.parked.count(processor.engine) == 0  # it left the retries: nothing is tried again


async def test_a_compensation_whose_own_event_is_invalid_is_a_dead_letter_at_once(settings: Settings) -> None:
    step = processor_for("first", settings)
    await applied(step, [Rec(asked("full-1", name="Ful").to_json())])

    def undo_too_much(event: ToyFailure, uow: UnitOfWork[Any]) -> list[Event]:
        undo_first(event, uow)  # its undoing, to be rolled back with the attempt
        return [ToyFailed.of(event, undone=("first",) * 17)]  # more than an event may say

    processor = processor_for("first.compensations", settings, SecondFailed=undo_too_much)
    result = await applied(processor, [Rec(second_failed("full-1", "Ful").to_json(), topic=FAILURES)])
    assert result.retries == [] and result.parked == 0
    (row,) = result.outbox
    headers = dict(row.headers)
    assert row.topic == dead_letters(FAILURES)
    assert headers[REASON_HEADER] == (
        "compensation_failed: ValidationError: ToyFailed: undone: "
        "Tuple should have at most 16 items after validation, not 17 after 1 attempt"
    )
    assert headers[ATTEMPTS_HEADER] == "1"
    assert list(result.operator) == ["full-1"]
    assert (tally(step, "Ful"), marked(step, "full-1")) == (1, "done")  # the undoing rolled back with the attempt


@pytest.mark.parametrize(
    ("failed_step", "undone", "reason"),
    [
        ("third", (), "failed_step 'third' is no step of the saga (first, second)"),
        ("second", ("first", "zeroth"), "undone names 'zeroth', no step of the saga (first, second)"),
        ("second", ("first", "second", "first"), "undone names 3 steps; the saga has 2"),
    ],
)
async def test_a_failure_naming_steps_the_saga_does_not_have_is_a_dead_letter_and_undoes_nothing(
    settings: Settings, failed_step: str, undone: tuple[str, ...], reason: str
) -> None:
    """The bounds of failed_step and undone come from the declaration: no event type spells them."""
    step = processor_for("first", settings)
    await applied(step, [Rec(asked("odd-1", name="Odd").to_json())])
    failed = second_failed("odd-1", "Odd", undone=undone, failed_step=failed_step)
    processor = processor_for("first.compensations", settings)
    result = await applied(processor, [Rec(failed.to_json(), topic=FAILURES)])
    (row,) = result.outbox
    assert row.topic == dead_letters(FAILURES)
    assert dict(row.headers)[REASON_HEADER] == f"invalid_data: SecondFailed: {reason}"
    assert (tally(step, "Odd"), marked(step, "odd-1")) == (1, "done")  # nothing was undone


async def test_a_compensation_for_a_saga_its_service_never_saw_is_a_dead_letter(settings: Settings) -> None:
    processor = processor_for("first.compensations", settings)
    result = await applied(processor, [Rec(second_failed("ghost-1", "Gus").to_json(), topic=FAILURES, offset=4)])
    (row,) = result.outbox
    assert row.topic == dead_letters(FAILURES)
    assert dict(row.headers)[REASON_HEADER].startswith("unknown_saga: first never saw saga 'ghost-1'")
    assert result.applied == {} and result.compensations == []
    # Re-published from its dead-letter topic after a fix (a new record, further on): tried again.
    again = await applied(processor, [Rec(second_failed("ghost-1", "Gus").to_json(), topic=FAILURES, offset=5)])
    assert len(again.outbox) == 1  # not in the inbox: replayed after a fix, it is tried again


async def test_a_compensation_the_database_refuses_is_parked_as_a_dead_letter(settings: Settings) -> None:
    step = processor_for("first", settings)
    saga = "refused-1"
    assert [r.type for r in (await applied(step, [Rec(asked(saga, name="Rex").to_json())])).outbox] == ["FirstDone"]
    # The database now refuses to take back Rex's count.
    databases.refuse_updates(settings, "first", "tallies", "NEW.name = 'Rex'", "undoing Rex is refused")
    compensator = processor_for("first.compensations", settings)
    result = await applied(compensator, [Rec(second_failed(saga, "Rex").to_json(), topic=FAILURES, offset=3)])
    (row,) = result.outbox
    assert row.topic == dead_letters(FAILURES)
    reason = dict(row.headers)[REASON_HEADER]
    assert reason.startswith("compensation_failed: IntegrityError") and "refused" in reason
    assert result.compensations == [] and result.retries == []
    assert (tally(step, "Rex"), marked(step, saga)) == (1, "done")  # nothing undone: stuck, not failed-and-clean
    inbox = compensator.inbox.table
    with compensator.engine.connect() as conn:  # not in its inbox: replaying the dead letter applies it
        query = select(func.count()).select_from(inbox).where(inbox.c.consumer == "first.compensations")
        assert conn.execute(query).scalar() == 0


async def test_a_parked_record_that_reaches_its_sagas_deadline_fails_the_step(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"retry": RetryPolicy(initial_interval=30, maximum_interval=30, maximum_attempts=0)}
    )
    processor = processor_for("second", settings, FirstDone=flaky(10**9))
    soon = with_deadline(first_done("due-1", name="Dov"), 1.5)
    first = await applied(processor, [Rec(soon.to_json())])
    assert first.parked == 1 and first.next_due is not None
    assert first.next_due <= soon.sagadeadline.timestamp() + 0.001  # type: ignore[union-attr]
    result = await retried(processor, first)
    (row,) = published(result)
    doc: dict[str, Any] = json.loads(row.value)
    assert (doc["type"], doc["data"]["reason"]) == ("SecondFailed", "deadline_exceeded")
