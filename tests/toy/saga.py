"""The toy saga, declared once: two services with the same tables, two steps, one compensation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

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


class Settings(engine.Settings):
    SERVICES: ClassVar[tuple[str, ...]] = tuple(TOY.services)

    first_db_url: str | None = None
    second_db_url: str | None = None

    _valid_urls = field_validator("first_db_url", "second_db_url")(engine.Settings.valid_database_url)
