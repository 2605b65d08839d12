"""The capture saga's settings: the engine's, for its four services, and its rules.

Each service's database is the engine's ``databases`` (``POKESAGA_<SERVICE>_DB_URL`` still names one).
"""

from __future__ import annotations

from pydantic import Field

from capture.saga import CAPTURE
from engine import settings

SERVICES: tuple[str, ...] = tuple(CAPTURE.services)


class Settings(settings.Settings):
    SERVICES = SERVICES

    starter_balls: int = Field(
        default=5, ge=0, description="Poké Balls in the bag of a trainer seen for the first time."
    )
    party_size: int = Field(default=6, ge=1, description="Pokémon a trainer's party holds; then the PC.")
    pc_capacity: int = Field(default=30, ge=0, description="Pokémon a trainer's PC holds; both full: DeliveryFailed.")
