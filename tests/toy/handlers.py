"""The toy's handlers: each step marks and counts; the compensation takes the first step's count back."""

from __future__ import annotations

from engine import Rejected, UnitOfWork
from tests.toy.events import Asked, FirstDone, FirstFailed, SecondDone, SecondFailed, ToyFailed, ToyFailure
from tests.toy.tables import ToyRecords


def do_first(event: Asked, uow: UnitOfWork[ToyRecords]) -> list[FirstDone]:
    """Count the name, mark the saga done."""
    uow.records.add_one(event.name)
    uow.records.mark(uow.saga_id, event.name, "done")
    return [FirstDone(**event.model_dump())]


def do_second(event: FirstDone, uow: UnitOfWork[ToyRecords]) -> list[SecondDone | SecondFailed]:
    """Count the name and end the saga, unless the event says to refuse it."""
    if event.refuse:
        uow.records.mark(uow.saga_id, event.name, "failed:refused")
        return [SecondFailed.of(event, "refused")]
    uow.records.add_one(event.name)
    uow.records.mark(uow.saga_id, event.name, "done")
    return [SecondDone(**event.model_dump())]


def give_up_first(event: Asked, uow: UnitOfWork[ToyRecords], reason: str, detail: str) -> FirstFailed:
    uow.records.mark(uow.saga_id, event.name, f"failed:{reason}")
    return FirstFailed.of(event, reason, detail)


def give_up_second(event: FirstDone, uow: UnitOfWork[ToyRecords], reason: str, detail: str) -> SecondFailed:
    uow.records.mark(uow.saga_id, event.name, f"failed:{reason}")
    return SecondFailed.of(event, reason, detail)


def undo_first(event: ToyFailure, uow: UnitOfWork[ToyRecords]) -> list[ToyFailed]:
    """Take back the first step's count, if it counted; every failure ends here, once."""
    outcome = uow.records.outcome(uow.saga_id)
    if outcome is None:
        raise Rejected("unknown_saga", f"first never saw saga {uow.saga_id!r}")
    undone = event.undone
    if outcome == "done":
        uow.records.take_one(event.name)
        uow.records.remark(uow.saga_id, "undone")
        undone = (*undone, "first")
    return [ToyFailed.of(event, undone=undone)]
