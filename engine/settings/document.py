"""Every setting as a Markdown page: its environment variable(s), type, default and description,
from the settings classes themselves (their fields' descriptions), so the page cannot drift.

    python -m engine.settings.document capture.settings:Settings examples.transfer.settings:Settings \\
        > docs/configuration.md

writes docs/configuration.md: the engine's settings, then what each saga's settings class named
adds (its business settings, its services' databases). A field without a description is refused.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import typing
from enum import Enum
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from engine.settings import Settings
from engine.settings.base import PREFIX
from engine.settings.broker import BrokerSettings
from engine.settings.database import DatabaseSettings
from engine.settings.failures import FailureSettings
from engine.settings.local import LocalSettings
from engine.settings.running import RunningSettings
from engine.settings.security import SecuritySettings
from engine.settings.variables import field_variables

GROUPS: tuple[tuple[str, type[Settings] | type[Any]], ...] = (
    ("Brokers, consumer groups and topics", BrokerSettings),
    ("Security: TLS and SASL", SecuritySettings),
    ("Databases, inbox and outbox", DatabaseSettings),
    ("Failures: retries and injected faults", FailureSettings),
    ("Running and observing", RunningSettings),
    ("The local broker and the tracker", LocalSettings),
)

HEADER = """\
# Configuration

<!-- Generated from the settings classes by
     python -m engine.settings.document {targets} > docs/configuration.md
     Edit the fields' descriptions, not this page: tests/unit/test_configuration_doc.py fails when they differ. -->

Every setting is read from the environment; the CLI's global flags (`--bootstrap-servers`,
`--data-dir`, `--partitions`) override it. A setting that takes JSON (a retry policy, `databases`)
can also be set one part at a time, `POKESAGA_<SETTING>__<PART>` (`POKESAGA_RETRY__MAXIMUM_ATTEMPTS=10`).
A `POKESAGA_…` variable that no setting reads is said once, as a warning naming the closest one:
`pokesaga: unknown setting POKESAGA_PARTITONS (did you mean POKESAGA_PARTITIONS?)`.
"""


def document(*sagas: type[Settings], targets: str = "") -> str:
    """The page: the engine's settings by group, then what each of ``sagas`` adds."""
    parts = [HEADER.format(targets=targets or "MODULE:SETTINGS_CLASS ...")]
    for title, group in GROUPS:
        parts.append(_section(title, _docstring(group), group.model_fields))
    for saga in sagas:
        own = {name: field for name, field in saga.model_fields.items() if name not in Settings.model_fields}
        where = f"`{saga.__module__}.{saga.__qualname__}`"
        intro = f"Read by {where}, besides the engine's."
        if saga.SERVICES:
            services = ", ".join(f"`{s}`" for s in saga.SERVICES)
            intro += (
                f" Its services: {services}; each one's database is its entry of `POKESAGA_DATABASES`, or "
                f"`POKESAGA_DATABASES__<SERVICE>`, or `{PREFIX}<SERVICE>_DB_URL` "
                f"(e.g. `{PREFIX}{saga.SERVICES[0].upper()}_DB_URL`)."
            )
        parts.append(_section(f"{_saga_title(saga)}", intro, own))
    return "\n".join(parts)


def _saga_title(saga: type[Settings]) -> str:
    return f"The saga of `{saga.__module__.removesuffix('.settings')}`"


def _docstring(group: type[Any]) -> str:
    module = sys.modules[group.__module__]
    text = " ".join((module.__doc__ or "").split())
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _section(title: str, intro: str, fields: dict[str, FieldInfo]) -> str:
    lines = [f"## {title}", "", intro, "", "| variable | type | default | description |", "|---|---|---|---|"]
    for name, field in fields.items():
        if not field.description:
            raise ValueError(f"setting {name} has no description: give its Field one")
        variables = ", ".join(f"`{v}`" for v in field_variables(name, field))
        cells = [variables, _type(field), _default(field), " ".join(field.description.split())]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _type(field: FieldInfo) -> str:
    shown = _annotation(field.annotation)
    bounds = []
    for constraint in field.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("max_length", "length ≤")):
            if isinstance(constraint, annotated_types.BaseMetadata) and getattr(constraint, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(constraint, attr)}")
    return f"{shown}, {', '.join(bounds)}" if bounds else shown


def _annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, UnionType):
        return " or ".join(_annotation(arg) for arg in typing.get_args(annotation) if arg is not NoneType)
    if origin is Literal:
        return "one of " + ", ".join(f"`{arg}`" for arg in typing.get_args(annotation))
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "JSON"
    if annotation is Path:
        return "path"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, BaseModel):
        hidden = extra.get("not_shown") if isinstance(extra, dict) else None
        exclude = {str(name) for name in hidden} if isinstance(hidden, list) else None
        return f"`{value.model_dump_json(exclude=exclude)}`"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)}`"
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(Path.home()):
        return f"`~/{value.relative_to(Path.home())}`"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    return f"`{value}`"


def _load(target: str) -> type[Settings]:
    module, _, name = target.partition(":")
    found = getattr(importlib.import_module(module), name or "Settings")
    if not (isinstance(found, type) and issubclass(found, Settings)):
        raise SystemExit(f"{target}: not a subclass of engine.settings.Settings")
    return found


def main(argv: list[str]) -> int:
    sys.stdout.write(document(*map(_load, argv), targets=" ".join(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
