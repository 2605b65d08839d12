"""engine.schemas: a released schema against the current one (each breaking change refused with its
line, compatible ones passed), the released set against the saga, ``schemas release`` and
``schemas check`` on the command line of a saga the engine has never seen (the toy saga)."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, create_model

from engine import cli
from engine.events import Event, added
from engine.schemas import Release, Released, breaking, check, read, release, render
from tests.toy.events import Asked
from tests.toy.saga import TOY, Settings

pytestmark = pytest.mark.no_database


def breaks(before: type[BaseModel], after: type[BaseModel]) -> list[str]:
    """What ``after`` breaks of ``before`` released as Thing v1."""
    return breaking("Thing", 1, before.model_json_schema(), after.model_json_schema())


class Level(BaseModel):
    level: int = Field(default=50, ge=1, le=100)


class TextLevel(BaseModel):
    level: str = "50"


class Status(Enum):
    HEALTHY = "HEALTHY"
    PARALYZED = "PARALYZED"
    FROZEN = "FROZEN"


class Fewer(Enum):
    HEALTHY = "HEALTHY"
    PARALYZED = "PARALYZED"


class More(Enum):
    HEALTHY = "HEALTHY"
    PARALYZED = "PARALYZED"
    FROZEN = "FROZEN"
    ASLEEP = "ASLEEP"


Name = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[^\x00]*$")]


class Thing(BaseModel):
    """The event as released."""

    name: Name
    nickname: str = ""
    level: int = Field(default=50, ge=1, le=100)
    status: Status = Status.HEALTHY
    kind: Literal["wild"] = "wild"
    types: list[str] = []
    lead: Level = Level()
    hp: int | str = 1


def changed(**fields: Any) -> type[BaseModel]:
    """Thing with ``fields`` redeclared as ``(type, default or Field(...))``, or removed (None)."""
    kept = {name: (info.annotation, info) for name, info in Thing.model_fields.items()}
    declared = {name: given for name, given in {**kept, **fields}.items() if given is not None}
    return create_model("Changed", **declared)


BREAKING = [
    ({"nickname": None}, "Thing v1: nickname: field removed"),
    ({"level": (str, "50")}, "Thing v1: level: retyped from integer to string"),
    ({"lead": (TextLevel, TextLevel())}, "Thing v1: lead.level: retyped from integer to string"),
    ({"types": (list[int], [])}, "Thing v1: types[]: retyped from string to integer"),
    ({"hp": (int, 1)}, "Thing v1: hp: no longer accepts string (a branch of its union removed; now integer)"),
    ({"shiny": (bool, ...)}, "Thing v1: shiny: required field added without a default"),
    ({"nickname": (str, ...)}, "Thing v1: nickname: now required"),
    ({"status": (Fewer, Fewer.HEALTHY)}, 'Thing v1: status: enum narrowed: "FROZEN" no longer accepted'),
    ({"kind": (Literal["tame"], "tame")}, 'Thing v1: kind: const changed from "wild" to "tame"'),
    ({"name": (Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[^\x00]*$")], ...)},
     "Thing v1: name: maxLength lowered from 40 to 20"),
    ({"name": (Annotated[str, Field(min_length=2, max_length=40, pattern=r"^[^\x00]*$")], ...)},
     "Thing v1: name: minLength raised from 1 to 2"),
    ({"name": (Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z]*$")], ...)},
     'Thing v1: name: pattern changed from "^[^\\\\x00]*$" to "^[a-z]*$"'),
    ({"level": (int, Field(50, ge=1, le=90))}, "Thing v1: level: maximum lowered from 100 to 90"),
    ({"level": (int, Field(50, ge=5, le=100))}, "Thing v1: level: minimum raised from 1 to 5"),
    ({"types": (list[Annotated[str, Field(max_length=40)]], [])}, "Thing v1: types[]: maxLength 40 added"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "line"), BREAKING, ids=[line.split(": ", 1)[1] for _, line in BREAKING])
def test_each_breaking_change_is_refused_with_its_line(fields: dict[str, Any], line: str) -> None:
    assert breaks(Thing, changed(**fields)) == [line]


COMPATIBLE = {
    "an optional field added": {"shiny": (bool, False)},
    "an enum widened": {"status": (More, More.HEALTHY)},
    "bounds widened": {"level": (int, Field(50, ge=0, le=255))},
    "a bound dropped": {"name": (Annotated[str, Field(min_length=1)], ...)},
    "a type widened": {"level": (float, Field(50, ge=1, le=100))},
    "a union that gains a branch": {"nickname": (str | None, None)},
    "a nested model renamed": {"lead": (Annotated[Level, Field(title="Lead", description="who fights")], Level())},
}


@pytest.mark.parametrize("fields", list(COMPATIBLE.values()), ids=list(COMPATIBLE))
def test_a_compatible_change_passes(fields: dict[str, Any]) -> None:
    assert breaks(Thing, changed(**fields)) == []


def test_a_model_is_compatible_with_itself_and_a_description_changes_nothing() -> None:
    class Described(Thing):
        """Another description altogether."""

    assert breaks(Thing, Thing) == breaks(Thing, Described) == []


def test_a_nested_model_is_compared_through_its_defs_wherever_it_is_used() -> None:
    class Pair(BaseModel):
        first: Level
        second: list[Level] = []

    class Bounded(BaseModel):
        level: int = Field(default=50, ge=1, le=90)

    class Narrower(BaseModel):
        first: Bounded
        second: list[Bounded] = []

    assert breaks(Pair, Narrower) == [
        "Thing v1: first.level: maximum lowered from 100 to 90",
        "Thing v1: second[].level: maximum lowered from 100 to 90",
    ]


def test_a_recursive_model_is_compared_once_round_its_loop() -> None:
    class Tree(BaseModel):
        name: str
        children: list[Tree] = []

    assert breaks(Tree, Tree) == []


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_a_maximum_breaks_exactly_when_it_is_lowered(released: int, current: int) -> None:
    before = {"type": "object", "properties": {"n": {"type": "integer", "maximum": released, "maxLength": 5}}}
    after = {"type": "object", "properties": {"n": {"type": "integer", "maximum": current, "maxLength": 5}}}
    assert bool(breaking("Thing", 1, before, after)) == (current < released)


def test_a_schema_that_cannot_be_resolved_is_one_line() -> None:
    with pytest.raises(ValueError, match="^\\$ref '#/\\$defs/Gone' leads nowhere$"):
        breaking("Thing", 1, {"properties": {"a": {"$ref": "#/$defs/Gone"}}}, {"properties": {"a": {}}})


KEYWORDS = ["type", "properties", "required", "items", "prefixItems", "anyOf", "allOf", "$ref", "enum", "const",
            "maximum", "pattern", "additionalProperties", "$defs", "x"]  # fmt: skip
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.sampled_from(["#/$defs/x", "object"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYWORDS), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(ANY_JSON)
def test_a_released_file_of_any_json_is_compared_or_refused_in_one_line(released: Any) -> None:
    try:
        assert isinstance(breaking("Asked", 1, released, Asked.model_json_schema()), list)
    except ValueError as exc:
        assert "\n" not in str(exc)


class Three(Event):
    topic: ClassVar[str] = "toy.first"
    dataversion: ClassVar[int] = 3
    upcasters = {1: added("b"), 2: added("c")}
    a: str
    b: str = ""
    c: str = ""


def released(**schemas: dict[int, Any]) -> Released:
    return Released(schemas=dict(schemas))


def test_the_set_says_what_is_missing_gone_or_ahead() -> None:
    now = Three.model_json_schema()
    types = {"Three": Three, "Asked": Asked}
    problems = check(types, released(Three={1: now, 3: now, 4: now}, Gone={1: {}}), "toy schemas release")
    assert problems == [
        "Gone: released (v1) but no event of the saga: its recorded events could not be read; keep the event type",
        "Three v4: released, but the model is version 3 (dataversion)",
        "Three v2: not among the released files; versions 1 to 3 should be",
        "Asked v1: not released yet: run `toy schemas release`",
    ]


class ThreeConverted(Three):
    """Three, each older version read through an upcaster of its own."""

    upcasters = {1: lambda d: {"a": str(d.get("x", ""))}, 2: lambda d: {"a": d}}


def test_older_versions_read_through_upcasters_of_their_own_are_not_compared_field_by_field() -> None:
    older = {1: {"required": ["x"], "properties": {"x": {"type": "integer"}}}, 2: {"type": "string"}}
    now = ThreeConverted.model_json_schema()
    assert check({"ThreeConverted": ThreeConverted}, released(ThreeConverted={**older, 3: now}), "") == []


def test_release_writes_the_current_versions_once_then_nothing(tmp_path: Path) -> None:
    done = release({"Three": Three, "Asked": Asked}, tmp_path)
    assert done.written == [tmp_path / "Three" / "v3.json", tmp_path / "Asked" / "v1.json"]
    assert (tmp_path / "Asked" / "v1.json").read_text() == json.dumps(Asked.model_json_schema(), indent=2,
                                                                      sort_keys=True) + "\n"  # fmt: skip
    assert release({"Three": Three, "Asked": Asked}, tmp_path).written == []
    assert check({"Three": Three, "Asked": Asked}, read(tmp_path), "") == [  # only the versions before missing
        "Three v1: not among the released files; versions 1 to 3 should be",
        "Three v2: not among the released files; versions 1 to 3 should be",
    ]
    assert read(tmp_path).versions == 2


class Renamed(Event):
    """The toy's Asked with its name field gone (a breaking change)."""

    topic: ClassVar[str] = "toy.first"
    refuse: bool = False


class Wider(Asked):
    """The toy's Asked with an optional field added (a compatible change)."""

    shiny: bool = False


def test_release_never_rewrites_a_released_file(tmp_path: Path) -> None:
    path = tmp_path / "Asked" / "v1.json"
    path.parent.mkdir()
    path.write_text(render(Asked))
    with pytest.raises(ValueError, match="^Asked v1: name: field removed$"):
        release({"Asked": Renamed}, tmp_path)
    assert release({"Asked": Wider}, tmp_path) == Release(written=[], kept=[path])
    assert path.read_text() == render(Asked)


def test_a_file_that_is_no_released_schema_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "Asked").mkdir()
    (tmp_path / "Asked" / "v1.json").write_text("{not json")
    (tmp_path / "Asked" / "latest.json").write_text("{}")
    lines = check({"Asked": Asked}, read(tmp_path), "")
    assert lines[0] == f"{tmp_path}/Asked/latest.json: not a released schema's name (v<N>.json, N from 1)"
    assert lines[1].startswith(f"{tmp_path}/Asked/v1.json: cannot be read: Expecting property name")
    assert len(lines) == 2  # v1 is there, if unreadable: not "not released yet"


def toy(tmp_path: Path | None, *argv: str) -> int:
    saga = dataclasses.replace(TOY, schemas=tmp_path)
    return cli.main(saga, ["schemas", *argv], settings=Settings, prog="toy")


def test_schemas_check_and_release_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert toy(tmp_path, "check") == 1
    said = f"toy schemas check: no released schemas in {tmp_path}: run `toy schemas release`\n"
    assert capsys.readouterr().err == said
    assert toy(tmp_path, "release") == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / name / "v1.json") for name in TOY.types]
    assert toy(tmp_path, "check") == 0
    assert capsys.readouterr().out == "6 event types, 6 versions: compatible\n"
    schema = json.loads((tmp_path / "Asked" / "v1.json").read_text())
    schema["properties"]["nickname"] = {"type": "string"}
    (tmp_path / "Asked" / "v1.json").write_text(json.dumps(schema))
    assert toy(tmp_path, "check") == 1
    assert capsys.readouterr().err == "Asked v1: nickname: field removed\n"
    assert toy(tmp_path, "release") == 1
    assert capsys.readouterr().err.splitlines() == [
        "Asked v1: nickname: field removed",
        "toy schemas release: nothing written (a released version is never rewritten: a change that breaks its "
        "readers needs a new version, dataversion + 1 and an upcaster)",
    ]


def test_a_saga_without_released_schemas_is_told_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert toy(None, "check") == 1
    assert capsys.readouterr().err == (
        "toy schemas check: saga toy keeps no released schemas: declare where, Saga(..., schemas=Path(...))\n"
    )
    assert toy(None, "frobnicate") == 2
    assert capsys.readouterr().err == (
        "toy schemas: argument action: invalid choice: 'frobnicate' (choose from 'check', 'release')\n"
    )


class Retyped(Event):
    """Version 2 says it only added ``c`` (``added``), yet ``a`` became a number."""

    topic: ClassVar[str] = "toy.first"
    dataversion: ClassVar[int] = 2
    upcasters = {1: added("c")}
    a: int
    c: str = ""


class WasA(Event):
    topic: ClassVar[str] = "toy.first"
    dataversion: ClassVar[int] = 1
    a: str


def test_an_older_version_read_through_added_alone_is_compared_field_by_field() -> None:
    """``added`` changes nothing on the way up: a version 1 record is read by the current model as it
    was written. A version 2 that retyped (or removed) a field of version 1 under ``added`` broke every
    recorded version 1 record, and ``schemas check`` passed it: only the current version was compared."""
    v1 = WasA.model_json_schema()
    problems = check({"Retyped": Retyped}, released(Retyped={1: v1, 2: Retyped.model_json_schema()}), "")
    assert problems == [
        "Retyped v1: a: retyped from string to integer",
        "Retyped v1: a: retyped from integer to string (version 2 published pinned to v1, the fields added since "
        "dropped: a version 1 reader refuses it)",
    ]

    # The same change under an upcaster of its own is the upcaster's to make right: not compared.
    class Converted(Retyped):
        upcasters = {1: lambda d: {**d, "a": len(d["a"])}}

    assert check({"Converted": Converted}, released(Converted={1: v1, 2: Converted.model_json_schema()}), "") == []


class Widened(Event):
    """Version 2 says it only added ``c``, yet ``a`` takes longer text than version 1 did."""

    topic: ClassVar[str] = "toy.first"
    dataversion: ClassVar[int] = 2
    upcasters = {1: added("c")}
    a: Annotated[str, Field(max_length=200)]
    c: str = ""


class ShortA(Event):
    topic: ClassVar[str] = "toy.first"
    a: Annotated[str, Field(max_length=64)]


def test_what_a_producer_pinned_to_an_older_version_publishes_must_be_read_by_that_versions_readers() -> None:
    """A producer pinned to version 1 (POKESAGA_PUBLISH_VERSIONS) publishes version 2's data with the
    added fields dropped: version 1's readers must take it. A bound widened under ``added`` let a pinned
    producer publish text of 200 characters that every version 1 reader dead-letters; the check passed."""
    v1 = ShortA.model_json_schema()
    problems = check({"Widened": Widened}, released(Widened={1: v1, 2: Widened.model_json_schema()}), "")
    assert problems == [
        "Widened v1: a: maxLength lowered from 200 to 64 (version 2 published pinned to v1, the fields "
        "added since dropped: a version 1 reader refuses it)"
    ]

    # What a version 1 reader ignores (a field it does not name, at any depth) is no problem.
    class Lead(BaseModel):
        name: str = ""

    class WithLead(ShortA):
        lead: Lead = Lead()

    class MoreLead(Lead):
        level: int = 0

    class Grown(WithLead):
        dataversion: ClassVar[int] = 2
        upcasters = {1: added("c")}
        lead: MoreLead = MoreLead()
        c: str = ""

    v1 = WithLead.model_json_schema()
    assert check({"Grown": Grown}, released(Grown={1: v1, 2: Grown.model_json_schema()}), "") == []
