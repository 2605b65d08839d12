"""Versions of an event: reading older ones, holding newer ones, publishing a pinned one.

Each event type has a version (``Event.dataversion``, the envelope's ``dataversion``) and, for
each older version, an upcaster to the next (``Event.upcasters``). A consumer reads any version
up to its own, upcast on the way in; one newer than it knows is not its to read (``newer``: the
worker holds the record until an instance that knows it takes it). A producer publishes its
current version, or the one its settings pin (``POKESAGA_PUBLISH_VERSIONS``) while its readers
are upgraded: down-cast by dropping the fields added since, which is possible only when every
version since only added fields with defaults (``engine.events.added``).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from engine.events import Added, Event

NEWER_VERSION = "newer_version"


def check(cls: type[Event]) -> None:
    """``ValueError`` in one line when ``cls``'s versions cannot work: each older version needs an
    upcaster to the next, and nothing else is one; an added field needs a default."""
    version, upcasters = cls.dataversion, cls.upcasters
    name = cls.__name__
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 1000:
        raise ValueError(f"event {name}: dataversion must be a whole number from 1 to 1000, not {version!r}")
    missing = [v for v in range(1, version) if v not in upcasters]
    if missing:
        raise ValueError(f"event {name}: version {version} needs an upcaster from version {missing[0]} "
                         f"(upcasters = {{{missing[0]}: ...}})")  # fmt: skip
    stray = sorted(v for v in upcasters if not isinstance(v, int) or not 1 <= v < version)
    if stray:
        raise ValueError(f"event {name}: an upcaster from version {stray[0]!r}, but its versions are 1 to {version}")
    for v, upcaster in upcasters.items():
        if not callable(upcaster):
            raise ValueError(f"event {name}: the upcaster from version {v} is not a function")
        if isinstance(upcaster, Added):
            for field in upcaster.fields:
                info = cls.model_fields.get(field)
                if info is None:
                    raise ValueError(f"event {name}: version {v + 1} adds {field!r}, which is no field of it")
                if info.is_required():
                    raise ValueError(f"event {name}: version {v + 1} adds {field!r} with no default; "
                                     "a reader of older records needs one")  # fmt: skip


def newer(cls: type[Event], version: int) -> str | None:
    """Why a record of ``cls`` at ``version`` is not this reader's to read yet, in one line; None if it is."""
    if version <= cls.dataversion:
        return None
    return f"{NEWER_VERSION}: {cls.__name__} version {version}; this instance reads up to version {cls.dataversion}"


def upcast(cls: type[Event], version: int, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` of ``cls`` at ``version`` (not newer than ``cls``'s), as the current version's. The
    upcasters are given a copy: one that changes what it is given in place leaves ``data`` (a record's
    envelope, read again by the careful pass, a rebuild or the tracker) as it was read."""
    if version < cls.dataversion:
        data = copy.deepcopy(data)
    for v in range(version, cls.dataversion):
        data = cls.upcasters[v](data)
    return data


def down_to(cls: type[Event], version: int) -> tuple[str, ...] | str:
    """The fields to drop to publish ``cls`` at ``version``; or why it cannot be, in one line."""
    if not 1 <= version <= cls.dataversion:
        return f"{cls.__name__} has versions 1 to {cls.dataversion}, not {version}"
    dropped: list[str] = []
    for v in range(version, cls.dataversion):
        upcaster = cls.upcasters[v]
        if not isinstance(upcaster, Added):
            return (f"{cls.__name__} version {v + 1} is not version {v} with fields added (its upcaster is not "
                    "added(...)): it cannot be published as an older version")  # fmt: skip
        dropped.extend(upcaster.fields)
    return tuple(dropped)


def outgoing(event: Event, pinned: int | None = None) -> tuple[int, dict[str, Any]]:
    """The version ``event`` is published at and its data: the current one, or ``pinned`` (checked
    by ``check_pins`` before), the fields added since dropped."""
    cls = type(event)
    data = event.model_dump(mode="json")
    if pinned is None or pinned == cls.dataversion:
        return cls.dataversion, data
    dropped = down_to(cls, pinned)
    assert not isinstance(dropped, str), dropped
    for field in dropped:
        data.pop(field, None)
    return pinned, data


def check_pins(pins: Mapping[str, int], types: Mapping[str, type[Event]], setting: str) -> None:
    """``ValueError`` in one line for a pin that cannot work: a type that is no event of the saga
    (with the closest name), a version it has not, one it cannot be down-cast to."""
    for name, version in pins.items():
        cls = types.get(name)
        if cls is None:
            close = difflib.get_close_matches(name, list(types), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"{setting} names {name!r}, no event of the saga{hint}")
        why = down_to(cls, version)
        if isinstance(why, str):
            raise ValueError(f"{setting}: {why}")


def versions(types: Iterable[type[Event]]) -> dict[str, int]:
    """Each event type's current version."""
    return {cls.__name__: cls.dataversion for cls in types}
