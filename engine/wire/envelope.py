"""The envelope: structured-mode CloudEvents 1.0 JSON, UTF-8.

Event ids are derived, never random: a saga's id, its start event id and each event's type
fix the id of everything that follows, so reprocessing the same input yields the same ids.

An event a participant publishes takes its id from its saga, its cause's id and its type
(``caused_id``): a client may choose a start event id another saga used before (once the inbox
has forgotten it, it is applied), and the events that follow still get ids of their own. Before,
a caused id derived from the cause's id and the type alone (``legacy_caused_id``): the events of
two sagas started under one id had the same ids, and the second saga's were refused as
``event_id_reused``. Events published the old way may still be on the topics or in an outbox
after an upgrade: wherever an id is compared with its derivation (a rebuild's recorded
decisions, a copy published again), both derivations are taken (``caused_ids``, ``is_caused_id``).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from engine import versions
from engine.events import Event, bounded

DATA_VERSION = 1  # an envelope that says none holds version 1 of its event (engine.versions)

# Namespace of every id pokesaga derives (uuid5).
NAMESPACE = uuid.UUID("5a6a0b55-2f0e-4c39-9a0e-7d3b6b1e0c61")
# Namespace of the ids of caused events, apart from every id derived the old way ("/"-joined parts).
CAUSED = uuid.uuid5(NAMESPACE, "caused")


MAX_ID = 200  # an id's length (a saga id, an event id)
MAX_TYPE = 100  # an event type's length
Id = Annotated[str, bounded(MAX_ID, min_length=1)]
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?", re.ASCII)


def _string_or_datetime(value: Any) -> Any:
    # CloudEvents' time is a string; pydantic alone would also take a number of seconds.
    if value is None or isinstance(value, str | datetime):
        return value
    raise ValueError("time must be an RFC 3339 date-time string")


def _deadline(value: Any) -> Any:
    # A deadline is an RFC 3339 date-time, nothing pydantic would also take (a number, a date alone).
    if value is None or isinstance(value, datetime) or (isinstance(value, str) and _DATE_TIME.fullmatch(value)):
        return value
    raise ValueError("sagadeadline must be an RFC 3339 date-time, e.g. 2026-11-23T10:00:30Z")


def _version(value: Any) -> Any:
    # JSON's true or false is no version; pydantic alone would take true as 1 (engine.versions).
    if isinstance(value, bool):
        raise ValueError("dataversion must be a whole number, not a boolean")
    return value


class Envelope(BaseModel):
    """A CloudEvent carrying one saga event in ``data``. Unknown extensions are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"]
    id: Id
    source: Annotated[str, bounded(200, min_length=1)]
    type: Annotated[str, bounded(MAX_TYPE, min_length=1)]
    time: Annotated[datetime | None, BeforeValidator(_string_or_datetime)] = None
    subject: Id | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    sagaid: Id = Field(description="The saga id; also the record key.")
    causationid: Id | None = Field(default=None, description="Id of the event that caused this one.")
    dataversion: Annotated[int, BeforeValidator(_version)] = Field(default=DATA_VERSION, ge=1, le=1000)
    sagadeadline: Annotated[datetime | None, BeforeValidator(_deadline)] = Field(
        default=None, description="When the saga must be over (RFC 3339); passed on by every step."
    )
    data: dict[str, Any]

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, without building a ``UUID`` (a hop derives one or two
    ids a record; the stdlib's way spends most of its time in ``UUID.__init__``)."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derive_id(*parts: str) -> str:
    """A deterministic id from its parts, "/"-joined (a start event's: the saga id and its type)."""
    return uuid5_text(NAMESPACE, "/".join(parts))


def caused_id(saga_id: str, cause_id: str, kind: str, *more: str) -> str:
    """The id of what ``cause_id`` caused in saga ``saga_id``: the event of type ``kind`` (or a
    retry notice: ``kind`` and ``more``). The parts are JSON-encoded, so no two lists of parts give
    one text whatever they hold ("/" included)."""
    return uuid5_text(CAUSED, json.dumps([saga_id, cause_id, kind, *more]))


def legacy_caused_id(cause_id: str, kind: str) -> str:
    """A caused event's id as pokesaga derived it before the saga id was part of it."""
    return derive_id(cause_id, kind)


def caused_ids(saga_id: str, cause_id: str, kind: str) -> tuple[str, str]:
    """The ids the event of type ``kind`` caused by ``cause_id`` may carry: derived now, and the old way."""
    return caused_id(saga_id, cause_id, kind), legacy_caused_id(cause_id, kind)


def is_caused_id(envelope: Envelope) -> bool:
    """Does ``envelope``'s id derive from its saga, its cause and its type, as a participant
    derives it (now or before the saga id was part of it)?"""
    cause = envelope.causationid
    return cause is not None and envelope.id in caused_ids(envelope.sagaid, cause, envelope.type)


def start_event_id(saga_id: str, type_: str) -> str:
    """The id of a saga's start event of type ``type_``, when its client leaves the id to us."""
    return derive_id(saga_id, type_)


def wrap(
    event: Event,
    *,
    saga_id: str,
    source: str,
    causation_id: str | None,
    event_id: str | None = None,
    time: datetime | None = None,
    deadline: datetime | None = None,
    validate: bool = True,
    version: int | None = None,
) -> Envelope:
    """Put ``event`` in an envelope. Without ``event_id``, the id derives from the saga and the cause.
    ``deadline``: the saga's (``sagadeadline``), passed on from the cause. ``validate=False`` when
    every part was validated already (a participant's event caused by an envelope it decoded).
    ``version``: an older version of the event to publish (engine.versions.check_pins checked it)."""
    type_ = type(event).__name__
    dataversion, data = versions.outgoing(event, version)
    if event_id is None:
        event_id = caused_id(saga_id, causation_id, type_) if causation_id else start_event_id(saga_id, type_)
    return (Envelope if validate else Envelope.model_construct)(
        specversion="1.0",
        id=event_id,
        source=source,
        type=type_,
        time=time or datetime.now(UTC),
        subject=saga_id,
        sagaid=saga_id,
        causationid=causation_id,
        dataversion=dataversion,
        sagadeadline=deadline,
        data=data,
    )
