"""The capture saga's settings: the engine's, its four services' databases, and its rules."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from capture.saga import CAPTURE
from engine import settings

SERVICES: tuple[str, ...] = tuple(CAPTURE.services)  # each has its <service>_db_url field below


class Settings(settings.Settings):
    SERVICES: ClassVar[tuple[str, ...]] = SERVICES

    status_db_url: str | None = None
    combat_db_url: str | None = None
    pokeball_db_url: str | None = None
    delivery_db_url: str | None = None
    starter_balls: int = Field(default=5, ge=0)
    party_size: int = Field(default=6, ge=1)
    pc_capacity: int = Field(default=30, ge=0)

    _valid_urls = field_validator("status_db_url", "combat_db_url", "pokeball_db_url", "delivery_db_url")(
        settings.Settings.valid_database_url
    )
