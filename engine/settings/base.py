"""What every group of settings shares: read from the environment (prefix ``POKESAGA_``), the
saga's services (``SERVICES``, set by the saga's settings, see ``Settings.for_saga``), and how a
misspelt name is answered.
"""

from __future__ import annotations

import difflib
from typing import ClassVar

from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "POKESAGA_"


class SettingsGroup(BaseSettings):
    """A group of settings; ``engine.settings.Settings`` is all of them."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__", extra="ignore")

    SERVICES: ClassVar[tuple[str, ...]] = ()  # the saga's services: what databases and step_retry accept


def closest(value: str, choices: tuple[str, ...] | list[str] | set[str]) -> str | None:
    """The choice ``value`` most likely misspells, if any is close enough."""
    close = difflib.get_close_matches(value, sorted(choices), n=1)
    return close[0] if close else None


def did_you_mean(value: str, choices: tuple[str, ...] | list[str] | set[str]) -> str:
    close = closest(value, choices)
    return f" (did you mean {close!r}?)" if close else ""
