"""The transfer saga's settings: the engine's, for its two services, and its one rule.

From the environment like the engine's (``POKESAGA_OPENING_BALANCE``; each service's database as
``POKESAGA_DATABASES__WITHDRAWALS`` or ``POKESAGA_WITHDRAWALS_DB_URL``).
"""

from __future__ import annotations

from pydantic import Field

import engine
from examples.transfer.saga import TRANSFER

SERVICES: tuple[str, ...] = tuple(TRANSFER.services)


class Settings(engine.Settings):
    SERVICES = SERVICES

    opening_balance: int = Field(default=100_00, ge=0, description="Cents in an account seen for the first time.")
