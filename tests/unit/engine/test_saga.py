"""The declaration (engine.saga): what is derived from a step's handler and a saga's order, and the
one clear line a declaration that cannot work gets, at import, before anything runs."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from engine import Compensation, Event, Saga, Service, Step, UnitOfWork
from tests.toy import handlers
from tests.toy.events import Asked, FirstDone, FirstFailed, SecondDone, SecondFailed, Toy, ToyFailed, ToyFailure
from tests.toy.saga import TOY, first, second
from tests.toy.tables import ToyRecords


class Elsewhere(Toy):
    topic: ClassVar[str] = "toy.elsewhere"


def unannotated(event, uow):  # type: ignore[no-untyped-def]
    return []


def reads_two_topics(event: Asked | Elsewhere, uow: UnitOfWork[ToyRecords]) -> list[FirstDone]:
    return []


def fails_two_ways(event: Asked, uow: UnitOfWork[ToyRecords]) -> list[FirstDone | FirstFailed | SecondFailed]:
    return []


def undoes_only_second(event: SecondFailed, uow: UnitOfWork[ToyRecords]) -> list[ToyFailed]:
    return []


def publishes_nothing_said(event: ToyFailure, uow: UnitOfWork[ToyRecords]) -> list[Event]:
    return []


def test_the_toys_declaration_derives_its_events_outcomes_and_listen_sets() -> None:
    assert list(TOY.types) == ["Asked", "FirstDone", "SecondDone", "FirstFailed", "SecondFailed", "ToyFailed"]
    assert TOY.outcomes == (SecondDone, ToyFailed)
    assert TOY.start is Asked
    assert TOY.steps[1].consumes == "toy.second" and TOY.steps[1].fails_with == (SecondFailed,)
    assert {n: list(p.handlers) for n, p in TOY.participants.items()} == {
        "first": ["Asked"], "second": ["FirstDone"], "first.compensations": ["FirstFailed", "SecondFailed"],
    }  # fmt: skip
    assert TOY.participants["first"].steps == ("first", "second")


def test_a_step_without_give_up_publishes_its_one_failure_recording_nothing() -> None:
    step = Step(first, handlers.do_first, fails_with=(FirstFailed,))
    failed = step.give_up(Asked(name="Ann"), Any, "retries_exhausted", "boom")  # type: ignore[arg-type]
    assert failed == FirstFailed(name="Ann", reason="retries_exhausted", detail="boom")


def test_failure_of_carries_the_cause_and_keeps_a_passed_on_failure_s_words() -> None:
    failed = SecondFailed.of(FirstDone(name="Ann"), "refused", failed_step="second")
    passed = ToyFailed.of(failed, undone=("first",))
    assert (passed.name, passed.reason, passed.failed_step, passed.undone) == ("Ann", "refused", "second", ("first",))


@pytest.mark.parametrize(
    ("declare", "said"),
    [
        (lambda: Step(first, unannotated), "step first: unannotated: annotate its first parameter"),
        (lambda: Step(first, reads_two_topics), "step first: its events go to 2 topics (toy.elsewhere, toy.first)"),
        (lambda: Step(first, fails_two_ways), "step first: it has 2 failure events: give it a give_up function"),
        (lambda: Step(first), "step first: give it the handler of the event it consumes"),
        (lambda: Compensation(first, publishes_nothing_said), "compensation first: say what it publishes"),
        (
            lambda: Saga("toy", steps=TOY.steps, compensations=(Compensation(first, undoes_only_second),)),
            "compensation first: it undoes FirstFailed, but its handler's event is annotated SecondFailed",
        ),
        (
            lambda: Saga(
                "toy",
                steps=TOY.steps[:1],
                compensations=TOY.compensations[:1] + (Compensation(second, handlers.undo_first),),
            ),
            "compensation second: saga toy has no step of that service",
        ),
        (lambda: Saga("toy", steps=(TOY.steps[0], TOY.steps[0])), "saga toy: a service has one step; first has more"),
        (lambda: Saga("toy", steps=()), "saga toy: it has no steps"),
        (
            lambda: Saga("toy", steps=TOY.steps, compensations=(Compensation(first, handlers.undo_first),) * 2),
            "compensation first: given twice; a service has one compensator",
        ),
        (
            lambda: Saga(
                "toy", steps=TOY.steps, compensations=(*TOY.compensations, Compensation(second, handlers.undo_first))
            ),
            "compensation second: no step from it on can fail, so it has nothing to undo; drop it",
        ),
        (
            lambda: Saga(
                "toy",
                steps=(
                    *TOY.steps,
                    Step(Service("again", ToyRecords), handlers.do_first, give_up=handlers.give_up_first),
                ),
            ),
            "saga toy: Asked is acted on by first and again; an event has one participant that acts on it",
        ),
        (
            lambda: Saga(
                "toy",
                steps=(
                    *TOY.steps,
                    Step(Service("late", ToyRecords), undoes_only_second, give_up=handlers.give_up_first),
                ),
            ),
            "saga toy: a step consumes SecondFailed, a failure event: failures go to the compensations",
        ),
        (lambda: Service("no.dots", ToyRecords), "service 'no.dots': a service's name is 1 to 64 letters"),
        (lambda: Service("x" * 65, ToyRecords), "a service's name is 1 to 64 letters"),
        (lambda: Service("third", ToyRecords, metadata=None, migrations=None), None),  # found beside ToyRecords
    ],
)
def test_a_declaration_that_cannot_work_says_why_in_one_line(declare: Any, said: str | None) -> None:
    if said is None:
        assert declare().migrations.name == "migrations"
        return
    with pytest.raises(ValueError) as raised:
        declare()
    assert said in str(raised.value) and "\n" not in str(raised.value)
