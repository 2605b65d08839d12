"""Settings: where each service's database is (``databases``, by service; a service not named has a
SQLite file in ``data_dir``), how long its inbox remembers, and what a database found created empty
or an outbox row left behind means. ``check_database_url`` says what is wrong with a URL.

A service's database is read from the environment in three forms, the narrower winning:
``POKESAGA_DATABASES`` (JSON, every service), then ``POKESAGA_DATABASES__<SERVICE>`` or
``POKESAGA_<SERVICE>_DB_URL`` (one service; both set to different URLs is refused).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from engine.settings.base import PREFIX, SettingsGroup, did_you_mean

DB_URL = re.compile(rf"{PREFIX}(\w+?)_DB_URL")  # POKESAGA_<SERVICE>_DB_URL, upper-cased
NESTED = re.compile(rf"{PREFIX}DATABASES__(\w+)")  # POKESAGA_DATABASES__<SERVICE>, upper-cased
LEGACY_FIELD = re.compile(r"(\w+?)_db_url")  # what a saga's settings had as fields: <service>_db_url


def database_variables(services: tuple[str, ...], environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Per service, the variables of its own that name its database, {service: {variable: url}}:
    ``POKESAGA_<SERVICE>_DB_URL`` and ``POKESAGA_DATABASES__<SERVICE>``, set and not empty. Of the
    declared ``services`` only; with none declared, of any."""
    found: dict[str, dict[str, str]] = {}
    for variable, value in environ.items():
        match = DB_URL.fullmatch(variable.upper()) or NESTED.fullmatch(variable.upper())
        if match and value.strip() and (not services or match[1].lower() in services):
            found.setdefault(match[1].lower(), {})[variable] = value
    return found


class DatabaseVariables(PydanticBaseSettingsSource):
    """``POKESAGA_<SERVICE>_DB_URL``, the form every service's database was first given in, read
    into ``databases`` (``POKESAGA_DATABASES`` and ``POKESAGA_DATABASES__<SERVICE>`` are
    pydantic-settings' own forms)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # read whole in __call__

    def __call__(self) -> dict[str, Any]:
        services: tuple[str, ...] = getattr(self.settings_cls, "SERVICES", ())
        found = {
            service: url
            for service, given in database_variables(services, os.environ).items()
            for variable, url in given.items()
            if DB_URL.fullmatch(variable.upper())
        }
        return {"databases": found} if found else {}


class DatabaseSettings(SettingsGroup):
    data_dir: Path = Field(default=Path(".pokesaga"), description="Where the SQLite files live.")
    databases: dict[str, str] = Field(
        default_factory=dict,
        description="Each service's database, any SQLAlchemy URL with a synchronous driver, by service, as JSON: "
        '`{"pokeball": "postgresql+psycopg://USER:PASSWORD@HOST:5432/pokeball"}`; or one service at a time, '
        "`POKESAGA_DATABASES__<SERVICE>` or `POKESAGA_<SERVICE>_DB_URL`. A service not named: a SQLite file in "
        "data_dir.",
    )
    inbox_retention_hours: float = Field(
        default=24,
        gt=0,
        description="How long an applied event id is remembered, for copies that come under new offsets (an outbox "
        "row published again, a client sending twice). Records read again from the broker, at any age, are known by "
        "the consumer's position instead. Must exceed how long a service may stay down with unsent outbox rows.",
    )
    rebuild_new_databases: bool = Field(
        default=True,
        description="A service database found created empty means its state was lost: rebuild it from the topics "
        "(its consumer groups moved to the earliest records). False: take the groups' positions as they are.",
    )
    outbox_grace_seconds: float = Field(
        default=5.0,
        gt=0,
        description="An outbox row still unpublished this long after a running instance first saw it was left by an "
        "instance that died after its local commit: a running instance publishes it (a live one needs milliseconds).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments first, then one service's variable, then the environment's whole mapping.
        return init_settings, DatabaseVariables(settings_cls), env_settings, dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _databases_by_field(cls, data: Any) -> Any:
        """``<service>_db_url=URL`` given as an argument (as a saga's own fields were once): that
        service's database; ``None`` or empty: its SQLite file."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        databases = dict(data.get("databases") or {})
        for key in [key for key in data if _legacy(cls, key)]:
            databases[key.removesuffix("_db_url")] = data.pop(key)
        data["databases"] = databases
        return data

    @field_validator("databases", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k).lower(): v for k, v in value.items() if v is not None and str(v).strip()}
        return value

    @model_validator(mode="after")
    def _valid_databases(self) -> Self:
        """Each database named belongs to a service of the saga and can be opened; an error names
        the variable that gave it."""
        given = database_variables(self.SERVICES, os.environ)
        for service, url in self.databases.items():
            variables = given.get(service, {})
            where = _where(service, url, variables)
            if self.SERVICES and service not in self.SERVICES:
                close = did_you_mean(service, self.SERVICES)
                known = ", ".join(self.SERVICES)
                raise _invalid(where, f"unknown service {service!r}{close}; expected one of {known}", service)
            if len(set(variables.values())) > 1:
                names = " and ".join(sorted(variables))
                raise _invalid(where, f"{names} name different databases: set one", mask_password(url))
            try:
                check_database_url(url)
            except ValueError as exc:
                raise _invalid(where, str(exc), mask_password(url)) from None
        return self

    def db_url(self, service: str) -> str:
        """The database of ``service``: the one ``databases`` names, else a SQLite file in data_dir."""
        if self.SERVICES and service not in self.SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {', '.join(self.SERVICES)}")
        return self.databases.get(service) or f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def database_setting(self, service: str) -> str | None:
        """How the user named the database of ``service``, for a message: its variable
        (``POKESAGA_STATUS_DB_URL``, ``POKESAGA_DATABASES__STATUS``, ``POKESAGA_DATABASES (status)``),
        ``databases (status)`` when given as an argument; None when it is its SQLite file in data_dir."""
        url = self.databases.get(service)
        if not url:
            return None
        variables = database_variables(self.SERVICES, os.environ).get(service, {})
        where = _where(service, url, variables)
        return where[0] if len(where) == 1 else f"{where[0]} ({where[1]})"

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """As pydantic's; ``<service>_db_url`` in ``update`` (a URL, or None for the SQLite file)
        changes that service's entry of ``databases``."""
        if update and any(_legacy(type(self), key) for key in update):
            update = dict(update)
            databases = dict(update.get("databases", self.databases))
            for key in [key for key in update if _legacy(type(self), key)]:
                url = update.pop(key)
                service = key.removesuffix("_db_url")
                if url:
                    databases[service] = str(url)
                else:
                    databases.pop(service, None)
            update["databases"] = databases
        return super().model_copy(update=update, deep=deep)

    if not TYPE_CHECKING:  # typed code reads settings.databases; this serves callers of getattr(…, "<service>_db_url")

        def __getattr__(self, name: str) -> Any:
            match = LEGACY_FIELD.fullmatch(name)
            if match and (not self.SERVICES or match[1] in self.SERVICES):
                return self.__dict__.get("databases", {}).get(match[1])
            return super().__getattr__(name)


def _legacy(cls: type[BaseSettings], key: object) -> bool:
    """``key`` is a ``<service>_db_url`` no field of ``cls`` is called."""
    return isinstance(key, str) and bool(LEGACY_FIELD.fullmatch(key)) and key not in cls.model_fields


def _where(service: str, url: str, variables: dict[str, str]) -> tuple[str, ...]:
    """Where the database of ``service`` was given: its own variable, else POKESAGA_DATABASES."""
    for variable, value in sorted(variables.items()):
        if value == url:
            return (variable.upper(),)
    for name, value in os.environ.items():
        if name.upper() == f"{PREFIX}DATABASES":
            try:
                mapping = json.loads(value)
            except ValueError:
                continue
            if isinstance(mapping, dict) and {str(k).lower(): v for k, v in mapping.items()}.get(service) == url:
                return (f"{PREFIX}DATABASES", service)
    return ("databases", service)


def _invalid(where: tuple[str, ...], message: str, given: str) -> ValidationError:
    """A validation error at ``where`` (a variable, as the user wrote it), saying ``message``."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data("Settings", [InitErrorDetails(type=error, loc=where, input=given)])


def mask_password(url: str) -> str:
    """``url`` with the password of its user info, if any, shown as ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def check_database_url(url: str) -> None:
    """Raise ValueError, saying what to do, unless ``url`` is a database pokesaga can open:
    a parseable SQLAlchemy URL, of a known dialect, whose synchronous driver is installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = mask_password(url)
    examples = "e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE or sqlite:///PATH/TO/FILE.db"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"could not parse {shown!r} as a database URL; expected {examples}") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"unknown kind of database {parsed.drivername!r} in {shown!r}; expected {examples}") from None
    if dialect.is_async:
        raise ValueError(f"{parsed.drivername!r} is an asyncio driver; pokesaga needs a synchronous one, {examples}")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(
            f"the driver of {parsed.drivername!r} is not installed (no module named {exc.name!r}): install it "
            "in pokesaga's environment, or use postgresql+psycopg:// (pip install 'pokesaga[postgres]') or sqlite:///"
        ) from None
