"""The toy saga, twice: as released (version 1 of every event) and after ``FirstDone`` gained a
field (version 2), as two builds of the same services would be during a rolling upgrade.

Version 2 of ``FirstDone`` adds ``stamp`` (default ""): the first step (version 2) stamps what
it hands on, and the second step (version 2) marks the saga ``done:<stamp>`` — a later step uses
the new field. Version 1 of the second step reads no stamp and marks ``done``. Both builds are
the saga ``toy``: the same services, topics, tables and consumer groups.

``python -m tests.toy.evolve 1|2 VERB ...`` is the engine's command line for one build.
"""

from __future__ import annotations

from typing import ClassVar

from engine import Compensation, Saga, Step, UnitOfWork, added
from tests.toy import events, handlers
from tests.toy.saga import TOY, first, second
from tests.toy.tables import ToyRecords


class FirstDone(events.Toy):
    """Version 2: what the first step hands on carries its stamp."""

    topic: ClassVar[str] = events.SECOND
    dataversion: ClassVar[int] = 2
    upcasters = {1: added("stamp")}

    stamp: str = ""


def do_first(event: events.Asked, uow: UnitOfWork[ToyRecords]) -> list[FirstDone]:
    uow.records.add_one(event.name)
    uow.records.mark(uow.saga_id, event.name, "done")
    return [FirstDone(**event.model_dump(), stamp=f"v2:{uow.saga_id}")]


def do_second(event: FirstDone, uow: UnitOfWork[ToyRecords]) -> list[events.SecondDone | events.SecondFailed]:
    if event.refuse:
        uow.records.mark(uow.saga_id, event.name, "failed:refused")
        return [events.SecondFailed.of(event, "refused")]
    uow.records.add_one(event.name)
    uow.records.mark(uow.saga_id, event.name, f"done:{event.stamp or 'unstamped'}")
    return [events.SecondDone(**event.model_dump())]


def give_up_second(event: FirstDone, uow: UnitOfWork[ToyRecords], reason: str, detail: str) -> events.SecondFailed:
    uow.records.mark(uow.saga_id, event.name, f"failed:{reason}")
    return events.SecondFailed.of(event, reason, detail)


V1 = TOY
V2 = Saga(
    "toy",
    steps=(Step(first, do_first, give_up=handlers.give_up_first), Step(second, do_second, give_up=give_up_second)),
    compensations=(Compensation(first, handlers.undo_first),),
)
BUILDS = {"1": V1, "2": V2}
