"""What every group of settings shares: read from the environment (prefix ``POKESAGA_``), the
saga's services (``SERVICES``, set by the saga's subclass), and how a misspelt name is answered.
"""

from __future__ import annotations

import difflib
from typing import ClassVar

from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsGroup(BaseSettings):
    """A group of settings; ``engine.settings.Settings`` is all of them."""

    model_config = SettingsConfigDict(env_prefix="POKESAGA_", env_nested_delimiter="__", extra="ignore")

    SERVICES: ClassVar[tuple[str, ...]] = ()  # the saga's services: what db_url and step_retry accept


def did_you_mean(value: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
