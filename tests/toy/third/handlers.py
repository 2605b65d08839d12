"""The third step: stamp the name, unless it starts with "no"."""

from __future__ import annotations

from engine import UnitOfWork
from tests.toy.events import SecondDone
from tests.toy.third.events import ThirdDone, ThirdFailed
from tests.toy.third.tables import StampRecords


def do_third(event: SecondDone, uow: UnitOfWork[StampRecords]) -> list[ThirdDone | ThirdFailed]:
    if event.name.startswith("no"):
        return [ThirdFailed.of(event, "refused_by_third")]
    uow.records.stamp(uow.saga_id, event.name)
    return [ThirdDone(**event.model_dump())]
