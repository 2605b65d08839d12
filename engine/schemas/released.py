"""The released schemas of a saga's events, kept in its repository: ``<dir>/<EventType>/v<N>.json``.

Each file holds the JSON Schema of that event's ``data`` at that version, as ``render`` writes it
(pydantic's ``model_json_schema()``, deterministic). ``check`` holds them against the saga as
declared; ``release`` writes the current version of each event not yet released, and never rewrites a
released file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.events import Added, Event
from engine.schemas.compat import breaking

FILE = re.compile(r"v([1-9][0-9]{0,3})\.json")


def render(cls: type[Event]) -> str:
    """The JSON Schema of ``cls``'s data, as a released file holds it."""
    return json.dumps(cls.model_json_schema(), indent=2, sort_keys=True) + "\n"


def path_of(directory: Path, name: str, version: int) -> Path:
    return directory / name / f"v{version}.json"


def shown(path: Path) -> Path:
    """``path`` from the working directory, when it is under it (as a checkout's files are)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except (OSError, ValueError):
        return path


@dataclass
class Released:
    """What a directory of released schemas holds: event type → version → schema, and what in it
    cannot be read (one line each; ``broken``: the versions whose file it is)."""

    schemas: dict[str, dict[int, Any]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    broken: set[tuple[str, int]] = field(default_factory=set)

    @property
    def versions(self) -> int:
        return sum(len(found) for found in self.schemas.values())


def read(directory: Path) -> Released:
    """The released schemas under ``directory`` (none if it does not exist)."""
    released = Released()
    if not directory.is_dir():
        return released
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.json")):
            match = FILE.fullmatch(path.name)
            if match is None:
                released.unreadable.append(f"{shown(path)}: not a released schema's name (v<N>.json, N from 1)")
                continue
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
                released.unreadable.append(f"{shown(path)}: cannot be read: {(str(exc) or repr(exc)).splitlines()[0]}")
                released.broken.add((folder.name, int(match.group(1))))
                continue
            released.schemas.setdefault(folder.name, {})[int(match.group(1))] = schema
    return released


def check(types: Mapping[str, type[Event]], released: Released, release: str) -> list[str]:
    """What is wrong with ``released`` for a saga with the event ``types``, one line each; [] if
    nothing. ``release``: the command that releases the current versions, to name it."""
    problems = list(released.unreadable)
    for name in sorted(set(released.schemas) - set(types)):
        found = ", ".join(f"v{v}" for v in sorted(released.schemas[name]))
        problems.append(f"{name}: released ({found}) but no event of the saga: its recorded events could not "
                        "be read; keep the event type")  # fmt: skip
    for name, cls in types.items():
        have, current = released.schemas.get(name, {}), cls.dataversion
        present = set(have) | {v for n, v in released.broken if n == name}
        for version in sorted(v for v in present if v > current):
            problems.append(f"{name} v{version}: released, but the model is version {current} (dataversion)")
        for version in range(1, current):
            if version not in present:
                problems.append(f"{name} v{version}: not among the released files; versions 1 to {current} should be")
        if current not in present:
            problems.append(f"{name} v{current}: not released yet: run `{release}`")
        # The current version, and each older one read through added(...) alone: that upcaster changes
        # nothing, so the current model reads such a version's records as they were written.
        # Each such older version is also what a producer pinned to it publishes (engine.versions.outgoing:
        # the current data, the fields added since dropped): that version's readers must take it.
        compared = [v for v in sorted(have) if v <= current and all_added(cls, v)]
        for version in compared:
            now = cls.model_json_schema()
            try:
                problems += breaking(name, version, have[version], now)
                if version < current:
                    pinned = f"version {current} published pinned to v{version}, the fields added since dropped"
                    # A field the older version does not name is ignored by its readers (extra="ignore").
                    lines = [line for line in breaking(name, version, without(now, cls, version), have[version])
                             if not line.endswith(": field removed")]  # fmt: skip
                    problems += [f"{line} ({pinned}: a version {version} reader refuses it)" for line in lines]
            except (ValueError, RecursionError) as exc:
                problems.append(f"{name} v{version}: the released schema cannot be compared: {exc}")
    return list(dict.fromkeys(problems))


def without(schema: dict[str, Any], cls: type[Event], version: int) -> dict[str, Any]:
    """``schema`` (``cls``'s current one) without the fields added since ``version``: what a producer
    pinned to ``version`` publishes."""
    dropped = {f for v in range(version, cls.dataversion) for f in getattr(cls.upcasters.get(v), "fields", ())}
    properties = {k: v for k, v in (schema.get("properties") or {}).items() if k not in dropped}
    required = [k for k in schema.get("required") or () if k not in dropped]
    return {**schema, "properties": properties, "required": required}


def all_added(cls: type[Event], version: int) -> bool:
    """Is every upcaster from ``version`` to ``cls``'s current one ``added(...)`` (the data as it was)?"""
    return all(isinstance(cls.upcasters.get(v), Added) for v in range(version, cls.dataversion))


@dataclass(frozen=True)
class Release:
    """What ``release`` did: the files written, and the released files it left as they are although the
    model's schema differs from them (compatibly: ``check`` would say if not)."""

    written: list[Path]
    kept: list[Path]


def release(types: Mapping[str, type[Event]], directory: Path) -> Release:
    """Write the current version of each event whose current version is not released yet.

    ``ValueError`` with the breaking changes, one per line, and nothing written, when a released
    current version differs from the model in a way that breaks its readers: a released file is never
    rewritten; such a change needs a new version (``dataversion`` one higher, an upcaster)."""
    released = read(directory)
    todo: dict[Path, str] = {}
    kept, refused = [], []
    for name, cls in types.items():
        version, text = cls.dataversion, render(cls)
        have = released.schemas.get(name, {})
        if version not in have:
            todo[path_of(directory, name, version)] = text
        elif have[version] != json.loads(text):
            kept.append(path_of(directory, name, version))
            try:
                refused += breaking(name, version, have[version], json.loads(text))
            except (ValueError, RecursionError) as exc:
                refused.append(f"{name} v{version}: the released schema cannot be compared: {exc}")
    if released.unreadable or refused:
        raise ValueError("\n".join([*released.unreadable, *refused]))
    written = []
    for path, text in todo.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:  # never over a file written meanwhile
            out.write(text)
        written.append(path)
    return Release(written, kept)
