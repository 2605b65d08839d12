"""The transfer saga's settings: the engine's, its two services' databases, and its one rule.

From the environment like the engine's (``POKESAGA_WITHDRAWALS_DB_URL``, ``POKESAGA_OPENING_BALANCE``).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

import engine

SERVICES: tuple[str, ...] = ("withdrawals", "deposits")


class Settings(engine.Settings):
    SERVICES: ClassVar[tuple[str, ...]] = SERVICES

    withdrawals_db_url: str | None = None
    deposits_db_url: str | None = None
    opening_balance: int = Field(default=100_00, ge=0, description="Cents in an account seen for the first time.")

    _valid_urls = field_validator("withdrawals_db_url", "deposits_db_url")(engine.Settings.valid_database_url)
