"""Versions of an event (engine.versions): upcasters declared and checked, older records read,
newer ones refused as such, a pinned older version published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import BaseModel

import engine
from engine import Event, FailureEvent, Saga, Service, Step, UnitOfWork, added, cli, versions
from engine.observe.sensor import LoopSensor
from engine.wire.codec import BadRecord, TooNew, decode_envelope, decode_event
from engine.wire.envelope import wrap
from engine.worker.batch.result import BatchResult
from tests.toy import events as v1
from tests.toy.evolve import V2
from tests.toy.evolve import FirstDone as FirstDoneV2
from tests.toy.tables import ToyRecords


class Moved(Event):
    """Version 3: version 2 renamed ``where`` to ``place``; version 3 added ``floor``."""

    topic: ClassVar[str] = "t.moved"
    dataversion: ClassVar[int] = 3
    upcasters = {1: lambda d: {k: v for k, v in d.items() if k != "where"} | {"place": d.get("where", "?")},
                 2: added("floor")}  # fmt: skip

    place: str
    floor: int = 0


def test_an_older_record_is_upcast_version_by_version() -> None:
    assert versions.upcast(Moved, 1, {"where": "attic"}) == {"place": "attic"}
    envelope = wrap(Moved(place="x"), saga_id="s", source="t", causation_id=None)
    old = envelope.model_copy(update={"dataversion": 1, "data": {"where": "attic"}})
    assert decode_event(old, {"Moved": Moved}) == Moved(place="attic", floor=0)
    assert decode_event(envelope, {"Moved": Moved}) == Moved(place="x")


def test_a_newer_record_is_refused_as_newer_not_misread() -> None:
    envelope = wrap(v1.Asked(name="Ann"), saga_id="s", source="t", causation_id=None)
    newer = envelope.model_copy(update={"dataversion": 2})
    with pytest.raises(TooNew) as refused:
        decode_event(newer, {"Asked": v1.Asked})
    assert refused.value.kind == "newer_version"
    assert refused.value.reason == "newer_version: Asked version 2; this instance reads up to version 1"
    assert isinstance(refused.value, BadRecord)


def test_wrap_stamps_the_current_version_or_the_pinned_one() -> None:
    event = FirstDoneV2(name="Ann", stamp="v2:s")
    current = wrap(event, saga_id="s", source="t", causation_id="c")
    assert (current.dataversion, current.data["stamp"]) == (2, "v2:s")
    pinned = wrap(event, saga_id="s", source="t", causation_id="c", version=1)
    assert pinned.dataversion == 1 and "stamp" not in pinned.data
    assert v1.FirstDone.model_validate(pinned.data) == v1.FirstDone(name="Ann")
    assert pinned.id == current.id  # the same event, whatever version it is published at


@given(name=st.text(min_size=1, max_size=64).filter(lambda s: "\x00" not in s), refuse=st.booleans())
def test_down_then_up_is_the_event_with_the_added_fields_defaulted(name: str, refuse: bool) -> None:
    event = FirstDoneV2(name=name, refuse=refuse, stamp="anything")
    version, data = versions.outgoing(event, 1)
    assert version == 1
    assert decode_event(wrap(event, saga_id="s", source="t", causation_id="c", version=1), {"FirstDone": FirstDoneV2}) \
        == event.model_copy(update={"stamp": ""})  # fmt: skip
    assert set(data) == set(v1.FirstDone.model_fields)


def test_pins_that_cannot_work_are_refused_in_one_line() -> None:
    types: dict[str, type[Event]] = {"FirstDone": FirstDoneV2, "Moved": Moved}
    versions.check_pins({"FirstDone": 1, "Moved": 2}, types, "PINS")  # Moved 3 -> 2 only drops floor
    with pytest.raises(ValueError, match=r"^PINS names 'FirstDon', no event of the saga \(did you mean FirstDone\?\)$"):
        versions.check_pins({"FirstDon": 1}, types, "PINS")
    with pytest.raises(ValueError, match="^PINS: FirstDone has versions 1 to 2, not 3$"):
        versions.check_pins({"FirstDone": 3}, types, "PINS")
    with pytest.raises(ValueError, match="^PINS: Moved version 2 is not version 1 with fields added"):
        versions.check_pins({"Moved": 1}, types, "PINS")


def _event(version: int, upcasters: dict[int, Any], **fields: Any) -> type[Event]:
    namespace: dict[str, Any] = {"topic": "t.x", "dataversion": version, "upcasters": upcasters}
    namespace["__annotations__"] = {"topic": "ClassVar[str]", "dataversion": "ClassVar[int]"}
    for name, default in fields.items():
        namespace["__annotations__"][name] = "str"
        if default is not ...:
            namespace[name] = default
    return type("X", (Event,), namespace)


@pytest.mark.parametrize(
    ("cls", "said"),
    [
        (lambda: _event(2, {}), "event X: version 2 needs an upcaster from version 1 (upcasters = {1: ...})"),
        (lambda: _event(1, {1: added("a")}, a=""), "event X: an upcaster from version 1, but its versions are 1 to 1"),
        (lambda: _event(2, {1: "nope"}), "event X: the upcaster from version 1 is not a function"),
        (lambda: _event(2, {1: added("b")}, a=""), "event X: version 2 adds 'b', which is no field of it"),
        (
            lambda: _event(2, {1: added("a")}, a=...),
            "event X: version 2 adds 'a' with no default; a reader of older records needs one",
        ),  # fmt: skip
        (lambda: _event(0, {}), "event X: dataversion must be a whole number from 1 to 1000, not 0"),
    ],
)
def test_versions_that_cannot_work_are_refused_when_declared(cls: Any, said: str) -> None:
    event = cls()
    with pytest.raises(ValueError) as refused:
        versions.check(event)
    assert str(refused.value) == said
    # ... and by the declaration of a saga that has it
    step = _step_of(event)
    with pytest.raises(ValueError, match="^event X: "):
        Saga("x", steps=(step,))


class Start(Event):
    topic: ClassVar[str] = "t.start"


class Broke(FailureEvent):
    topic: ClassVar[str] = "t.failures"


def _step_of(event: type[Event]) -> Step:
    def handle(start: Start, uow: UnitOfWork[ToyRecords]) -> list[Any]:
        return []

    handle.__annotations__.update(start=Start, uow=UnitOfWork[ToyRecords], ret=None)
    handle.__annotations__.pop("ret")
    handle.__annotations__["return"] = list[event | Broke]  # type: ignore[valid-type]
    return Step(Service("x", ToyRecords), handle)


def test_added_names_its_fields() -> None:
    with pytest.raises(ValueError, match="name the fields"):
        added()
    assert repr(added("a", "b")) == "added('a', 'b')"


@pytest.mark.parametrize(
    ("pins", "said"),
    [
        (
            '{"FirstDon": 1}',
            "POKESAGA_PUBLISH_VERSIONS names 'FirstDon', no event of the saga (did you mean FirstDone?)",
        ),
        ('{"FirstDone": 3}', "POKESAGA_PUBLISH_VERSIONS: FirstDone has versions 1 to 2, not 3"),
    ],
)
def test_a_pin_that_cannot_work_stops_the_command_in_one_line_before_any_connection(
    pins: str, said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("POKESAGA_PUBLISH_VERSIONS", pins)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: it would wait, not refuse
    code = cli.main(V2, ["--data-dir", str(tmp_path), "run", "first"], settings=engine.Settings.for_saga(V2))
    assert (code, capsys.readouterr().err) == (2, f"pokesaga: error: {said}\n")


def test_each_hold_is_counted_by_participant_and_type() -> None:
    labels = {"participant": "held-unit", "type": "FirstDone"}
    before = REGISTRY.get_sample_value("pokesaga_held_newer_version_total", labels) or 0.0
    LoopSensor("held-unit", compensator=False).on_applied(BatchResult(held=["FirstDone", "FirstDone"], parked=2))
    assert REGISTRY.get_sample_value("pokesaga_held_newer_version_total", labels) == before + 2


@pytest.mark.parametrize(
    "written",
    [True, "true", False],
)
def test_a_dataversion_of_true_or_false_is_no_version(written: object) -> None:
    """JSON's true is no version; pydantic's lax int took it as 1, and a record of unknown version was
    applied as version 1 (a consumer at version 2 upcast it): refused at the door instead."""
    doc = json.loads(wrap(v1.Asked(name="Ann"), saga_id="s", source="t", causation_id=None).to_json())
    doc["dataversion"] = written
    with pytest.raises(BadRecord) as refused:
        decode_envelope(json.dumps(doc).encode())
    assert refused.value.kind == "not_cloudevent" and "dataversion" in refused.value.reason


@pytest.mark.parametrize(("written", "read"), [(2, 2), ("2", 2), (2.0, 2), (1000, 1000)])
def test_a_dataversion_is_a_whole_number_however_written(written: object, read: int) -> None:
    doc = json.loads(wrap(v1.Asked(name="Ann"), saga_id="s", source="t", causation_id=None).to_json())
    doc["dataversion"] = written
    assert decode_envelope(json.dumps(doc).encode()).dataversion == read


class Nested(BaseModel):
    old: int = 0
    new: int = 0


class Renamed(Event):
    """Version 2 renamed ``inner.old`` to ``inner.new``, with an upcaster that changes what it is given
    in place (a nested dict), as a hurried one would."""

    topic: ClassVar[str] = "t.renamed"
    dataversion: ClassVar[int] = 2
    upcasters = {1: lambda d: (d["inner"].__setitem__("new", d["inner"].pop("old")), d)[1]}

    inner: Nested


def test_an_upcaster_that_changes_its_input_leaves_the_record_as_it_was_read() -> None:
    """The record's envelope is read again (the careful pass after the optimistic one, a rebuild's
    recorded decisions for each attempt, the tracker showing its data): an upcaster that changed the
    envelope's nested data in place made the second reading fail (KeyError: the field was gone)."""
    envelope = wrap(Renamed(inner=Nested(new=5)), saga_id="s", source="t", causation_id=None)
    old = envelope.model_copy(update={"dataversion": 1, "data": {"inner": {"old": 5}}})
    first = decode_event(old, {"Renamed": Renamed})
    assert old.data == {"inner": {"old": 5}}
    assert decode_event(old, {"Renamed": Renamed}) == first == Renamed(inner=Nested(new=5))


@pytest.mark.parametrize("pin", ["true", "1.5", '"one"'])
def test_a_pin_that_is_no_whole_number_is_refused(pin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's typo (``{"FirstDone": true}``) pinned the producer to version 1, in silence."""
    monkeypatch.setenv("POKESAGA_PUBLISH_VERSIONS", f'{{"FirstDone": {pin}}}')
    with pytest.raises(ValueError, match="publish_versions"):
        engine.Settings.for_saga(V2)()
