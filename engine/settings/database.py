"""Settings: where each service's database is (``db_url``: a saga's ``<service>_db_url``, else a
SQLite file in ``data_dir``), how long its inbox remembers, and what a database found created
empty or an outbox row left behind means. ``check_database_url`` says what is wrong with a URL.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from engine.settings.base import SettingsGroup


class DatabaseSettings(SettingsGroup):
    data_dir: Path = Field(default=Path(".pokesaga"), description="Where the SQLite files live.")
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

    @staticmethod
    def valid_database_url(value: str | None) -> str | None:
        """A field validator for a saga's ``<service>_db_url`` fields (see check_database_url)."""
        if value:
            check_database_url(value)
        return value

    def db_url(self, service: str) -> str:
        """The database of ``service``: its override, else a SQLite file in data_dir."""
        if self.SERVICES and service not in self.SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {', '.join(self.SERVICES)}")
        override = getattr(self, f"{service}_db_url", None)
        if override:
            return str(override)
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"


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
