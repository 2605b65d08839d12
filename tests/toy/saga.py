"""The toy saga, declared once: two services with the same tables, two steps, one compensation."""

from __future__ import annotations

from pathlib import Path

import engine
from engine import Compensation, Saga, Service, Step
from tests.toy import events, handlers
from tests.toy.tables import ToyRecords, metadata

MIGRATIONS = Path(__file__).parent / "migrations"  # both databases have the same tables, so one history

first = Service("first", metadata, ToyRecords, MIGRATIONS)
second = Service("second", metadata, ToyRecords, MIGRATIONS)

TOY = Saga(
    name="toy",
    events=(
        events.Asked, events.FirstDone, events.SecondDone, events.FirstFailed, events.SecondFailed, events.ToyFailed,
    ),
    steps=(
        Step(first, events.FIRST, {"Asked": handlers.do_first}, handlers.give_up_first,
             succeeds_with=(events.FirstDone,), fails_with=(events.FirstFailed,)),
        Step(second, events.SECOND, {"FirstDone": handlers.do_second}, handlers.give_up_second,
             succeeds_with=(events.SecondDone,), fails_with=(events.SecondFailed,)),
    ),
    compensations=(
        Compensation(first, {"FirstFailed": handlers.undo_first, "SecondFailed": handlers.undo_first},
                     publishes=(events.ToyFailed,)),
    ),
    outcomes=(events.SecondDone, events.ToyFailed),
)  # fmt: skip


Settings = engine.Settings.for_saga(TOY)  # the engine's settings, for the toy's two services
