"""Decode a Kafka record into an envelope and its event, or say in one line why not.

Decoding is total: whatever a record holds (any bytes, JSON nested thousands of levels deep,
integers thousands of digits long), the result is an envelope or a ``BadRecord``, never another
exception. The bounds themselves are in the contracts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import ValidationError

from engine import versions
from engine.events import Event
from engine.wire.envelope import Envelope


class BadRecord(Exception):
    """A record that cannot be parsed or validated; ``reason`` goes in the dead letter."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.reason = f"{kind}: {detail}"


class TooNew(BadRecord):
    """An event of a version newer than its type here (engine.versions): not this reader's to read yet."""


def _summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def decode_envelope(value: bytes | None) -> Envelope:
    if value is None:
        raise BadRecord("empty", "record has no value")
    try:  # pydantic parses and validates the bytes in one go: most records are good ones
        return Envelope.model_validate_json(value)
    except Exception:  # noqa: S110 - the careful way below accepts or refuses it, and says why
        pass
    return _decode_carefully(value)


def _decode_carefully(value: bytes) -> Envelope:
    """The stdlib's parser, then validation: each refusal with its kind (``not_json``, ``not_cloudevent``)."""
    try:
        document = json.loads(value)
    except RecursionError:
        raise BadRecord("not_json", "nested too deeply") from None
    except Exception as exc:  # bad UTF-8, bad JSON, an integer beyond Python's digit limit, ...
        raise BadRecord("not_json", _line(exc)) from None
    if not isinstance(document, dict):
        raise BadRecord("not_cloudevent", f"expected a JSON object, got {type(document).__name__}")
    try:
        return Envelope.model_validate(document)
    except ValidationError as exc:
        raise BadRecord("not_cloudevent", _summary(exc)) from None
    except Exception as exc:
        raise BadRecord("not_cloudevent", _line(exc)) from None


def decode_event(envelope: Envelope, types: Mapping[str, type[Event]]) -> Event:
    """The event in ``envelope.data``, of its type in ``types`` (check it is there before calling),
    upcast from an older version; ``newer_version`` when its version is newer than the type's."""
    cls = types[envelope.type]
    too_new = versions.newer(cls, envelope.dataversion)
    if too_new is not None:
        raise TooNew(versions.NEWER_VERSION, too_new.split(": ", 1)[1])
    try:
        data = envelope.data
        if envelope.dataversion < cls.dataversion:
            data = versions.upcast(cls, envelope.dataversion, data)
        return cls.model_validate(data)
    except ValidationError as exc:
        raise BadRecord("invalid_data", f"{envelope.type}: {_summary(exc)}") from None
    except Exception as exc:
        raise BadRecord("invalid_data", f"{envelope.type}: {_line(exc)}") from None


def _line(error: BaseException) -> str:
    """The error in one short line, for a dead letter's reason header."""
    text = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
