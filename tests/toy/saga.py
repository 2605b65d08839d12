"""The toy saga, declared once: two services with the same tables, two steps, one compensation."""

from __future__ import annotations

import engine
from engine import Compensation, Saga, Service, Step
from tests.toy import handlers
from tests.toy.tables import ToyRecords

first = Service("first", ToyRecords)  # both services have the same tables, so one history (tests/toy/migrations)
second = Service("second", ToyRecords)

TOY = Saga(
    "toy",
    steps=(Step(first, handlers.do_first, give_up=handlers.give_up_first),
           Step(second, handlers.do_second, give_up=handlers.give_up_second)),
    compensations=(Compensation(first, handlers.undo_first),),
)  # fmt: skip


Settings = engine.Settings.for_saga(TOY)  # the engine's settings, for the toy's two services
