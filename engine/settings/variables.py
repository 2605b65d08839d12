"""The environment variables a settings class reads, and the ``POKESAGA_…`` ones it does not: a
misspelt variable (``POKESAGA_PARTITONS=6``) is said once, as a warning naming the closest one,
instead of being ignored in silence."""

from __future__ import annotations

import logging
import os
import typing
from collections.abc import Mapping

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from engine.settings.base import PREFIX, closest
from engine.settings.database import DB_URL, NESTED

log = logging.getLogger("engine.settings")

# Read by pokesaga's tools and tests, not by the settings: never unknown.
READ_ELSEWHERE = frozenset(
    {
        "POKESAGA_BROKER",  # which broker to provision when KAFKA_BOOTSTRAP_SERVERS is unset: local or docker
        "POKESAGA_TEST_POSTGRES",
        "POKESAGA_CHAOS_ROUNDS",
        "POKESAGA_CHAOS_SAGAS",
        "POKESAGA_FAILOVER_SAGAS",
        "POKESAGA_HOSTILE_ROUNDS",
        "POKESAGA_DOCKER_STATE",
        "POKESAGA_PG_ROLE",
        "POKESAGA_PG_PASSWORD",
    }
)

_warned: set[str] = set()  # said once per process


def field_variables(name: str, field: FieldInfo) -> tuple[str, ...]:
    """The variables that set the field ``name``, the usual one first."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(choice.upper() for choice in alias.choices if isinstance(choice, str))
    if isinstance(alias, str):
        return (alias.upper(),)
    return (f"{PREFIX}{name.upper()}",)


def _nested(field: FieldInfo) -> bool:
    """A field read as JSON, whose parts may also be set one by one (``POKESAGA_RETRY__MAXIMUM_ATTEMPTS``)."""
    annotation = field.annotation
    if typing.get_origin(annotation) is dict:
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def known_variables(settings_cls: type[BaseSettings]) -> set[str]:
    """Every ``POKESAGA_…`` variable ``settings_cls`` reads as a whole (parts of JSON settings aside),
    with ``POKESAGA_<SERVICE>_DB_URL`` of each of its declared services."""
    names = {
        variable
        for name, field in settings_cls.model_fields.items()
        for variable in field_variables(name, field)
        if variable.startswith(PREFIX)
    }
    services: tuple[str, ...] = getattr(settings_cls, "SERVICES", ())
    return names | {f"{PREFIX}{service.upper()}_DB_URL" for service in services}


def unknown_variables(settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The ``POKESAGA_…`` variables of ``environ`` that ``settings_cls`` does not read, each with the
    closest one it does (or None)."""
    known = known_variables(settings_cls)
    nested = tuple(f"{PREFIX}{name.upper()}__" for name, field in settings_cls.model_fields.items() if _nested(field))
    services: tuple[str, ...] = getattr(settings_cls, "SERVICES", ())
    unknown = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(PREFIX) or upper in known or upper in READ_ELSEWHERE:
            continue
        if upper.startswith(nested) and not NESTED.fullmatch(upper):
            continue  # a part of a JSON setting: its own validation names a wrong part
        if NESTED.fullmatch(upper):
            continue  # a database of a service: refused by the validation if the service is unknown
        if not services and DB_URL.fullmatch(upper):
            continue  # no services declared: any service's database
        close = closest(upper.removeprefix(PREFIX), {name.removeprefix(PREFIX) for name in known})  # the prefix alike
        unknown.append((variable, PREFIX + close if close else None))
    return unknown


def warn_unknown_variables(settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
    """Say, once per process, each ``POKESAGA_…`` variable ``settings_cls`` does not read."""
    for variable, close in unknown_variables(settings_cls, os.environ if environ is None else environ):
        if variable not in _warned:
            _warned.add(variable)
            hint = f" (did you mean {close}?)" if close else ""
            log.warning("pokesaga: unknown setting %s%s", variable, hint)
