"""The tracker's changelog read back: a key is a saga id, a value a JSON object; anything else
decodes to a marker (never an error) and makes no table entry."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.tracker.changelog import BAD_KEY, BAD_VALUE, KeyCodec, ValueCodec, unfit

pytestmark = pytest.mark.no_database


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b'"saga-1"', "saga-1"),
        (b'"\\u00e9t\\u00e9"', "été"),
        (b'{"a": 1}', BAD_KEY),  # unhashable: faust's recovery never got past it
        (b"null", BAD_KEY),
        (b"42", BAD_KEY),
        (b'""', BAD_KEY),
        (b'"a\\u0000b"', BAD_KEY),
        (b'"' + b"x" * 201 + b'"', BAD_KEY),
        (b"\xff\xfe", BAD_KEY),
        (b"not json", BAD_KEY),
        (b"[" * 100_000, BAD_KEY),
    ],
)
def test_a_key_is_a_saga_id_or_bad(raw: bytes, decoded: object) -> None:
    assert KeyCodec().loads(raw) == decoded


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b'{"saga_id": "s", "events": []}', {"saga_id": "s", "events": []}),
        (b"{}", {}),
        (b"[1, 2]", BAD_VALUE),
        (b'"text"', BAD_VALUE),
        (b"not json", BAD_VALUE),
        (b"\xff", BAD_VALUE),
        (b'{"__faust": {"ns": "nowhere"}}', BAD_VALUE),  # faust would make a model of it, and fail
        (b"[" * 100_000, BAD_VALUE),
    ],
)
def test_a_value_is_a_json_object_or_bad(raw: bytes, decoded: object) -> None:
    assert ValueCodec().loads(raw) == decoded


def test_what_is_written_reads_back_and_only_a_fit_record_makes_an_entry() -> None:
    key, value = KeyCodec(), ValueCodec()
    assert key.loads(key.dumps("saga 1")) == "saga 1" and key.dumps("s") == b'"s"'
    assert value.loads(value.dumps({"saga_id": "s"})) == {"saga_id": "s"}

    def event(k: object, v: object) -> object:
        return SimpleNamespace(key=k, value=v)

    assert unfit(event("s", {})) is None and unfit(event("s", None)) is None  # an entry, a tombstone
    assert unfit(event(BAD_KEY, {})) == "bad_key" and unfit(event(None, {})) == "bad_key"
    assert unfit(event(BAD_KEY, BAD_VALUE)) == "bad_key" and unfit(event("s", BAD_VALUE)) == "bad_value"
