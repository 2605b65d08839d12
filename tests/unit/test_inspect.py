"""``pokesaga inspect saga`` shows the saga's parked records, per service: who holds them, the
event, why, attempt n of m, the next attempt and the last error; whatever the record held."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from capture import views
from capture.cli import main
from capture.saga import CAPTURE
from capture.settings import Settings
from engine.store.db import make_engine, rebuild_tables
from engine.store.migrate import upgrade
from tests.hostile import encode, envelope, nested

DUE = 1_800_000_000.25  # 2027-01-15T08:00:00.250000Z


def parked_row(saga: str, event_id: str, value: bytes, reason: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "consumer": "combat", "event_id": event_id, "saga_id": saga, "topic": "capture.combat", "partition": 0,
        "offset": 7, "timestamp": 0, "key": saga.encode(), "value": value, "headers": [], "reason": reason,
        "parked_at": time.time(), "attempts": 0, "due_at": None, "last_error": None,
    }  # fmt: skip
    return row | changes


def park(settings: Settings, service: str, rows: list[dict[str, Any]]) -> None:
    """Rows in the service's ``parked`` table, as its participants write them."""
    engine = make_engine(settings.db_url(service))
    try:
        upgrade(engine, CAPTURE.services[service])
        _, parked = rebuild_tables(CAPTURE.services[service].metadata)
        with engine.begin() as conn:
            if rows:
                conn.execute(parked.insert(), rows)
    finally:
        engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, step_retry={"combat": {"maximum_attempts": 0}})


def test_a_saga_retrying_at_a_step_shows_attempt_n_of_m_and_what_waits_behind_it(settings: Settings) -> None:
    paralyzed = encode(envelope("s1", "e2", "PokemonParalyzed", source="capture/status"))
    park(
        settings,
        "combat",
        [
            parked_row(
                "s1", "e2", paralyzed, "retrying", attempts=3, due_at=DUE, last_error="TransientFault: injected"
            ),
            parked_row("s1", "e9", encode(envelope("s1", "e9", "PokemonReleased")), "waiting", offset=8),
            parked_row("other", "x", paralyzed, "retrying", attempts=1, due_at=DUE),  # another saga's
        ],
    )
    view = views.saga(settings, "s1")
    assert view["combat"] is None and view["status"] is None  # the step has not happened
    head, behind = view["parked"]
    assert head == {
        "service": "combat", "participant": "combat", "event_id": "e2", "event_type": "PokemonParalyzed",
        "reason": "retrying", "attempts": 3, "maximum_attempts": 0,
        "next_attempt_at": "2027-01-15T08:00:00.250000Z", "last_error": "TransientFault: injected",
        "parked_at": head["parked_at"], "topic": "capture.combat", "partition": 0, "offset": 7,
    }  # fmt: skip
    assert (behind["event_type"], behind["reason"], behind["next_attempt_at"]) == ("PokemonReleased", "waiting", None)
    text = views.render_saga(view).splitlines()
    assert text[-3:] == [
        "  parked:",
        "    combat  PokemonParalyzed  retrying: attempt 3 of unlimited, next attempt at 2027-01-15T08:00:00.250000Z,"
        " last error: TransientFault: injected",
        "    combat  PokemonReleased  waiting: behind the record being retried",
    ]
    # The maximum is the policy's: the default five attempts for a step (twenty for a compensator).
    assert views.saga(Settings(data_dir=settings.data_dir), "s1")["parked"][0]["maximum_attempts"] == 5


def test_the_command_prints_the_parked_records_as_json_and_as_text(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    park(settings, "pokeball", [parked_row("s2", "e3", b"{}", "rebuilding", consumer="pokeball.compensations")])
    assert main(["--data-dir", str(settings.data_dir), "inspect", "saga", "s2", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)["parked"]
    assert (record["service"], record["participant"], record["reason"]) == (
        "pokeball",
        "pokeball.compensations",
        "rebuilding",
    )
    assert record["maximum_attempts"] == 20 and record["event_type"] is None  # "{}" is no envelope; 20: a compensator's
    assert main(["--data-dir", str(settings.data_dir), "inspect", "saga", "s2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "    pokeball.compensations  ?  rebuilding: held until pokeball.compensations has rebuilt its state"
    )


@pytest.mark.parametrize(
    "value",
    [
        b"",
        bytes(range(256)),
        nested(5000),
        encode(envelope("s3", "e", "\x1b[2J\u202eEvil\x00")),
        encode(envelope("s3", "e", "T" * 100_000)),
    ],
)
def test_whatever_a_parked_record_holds_is_shown_bounded_and_printable(settings: Settings, value: bytes) -> None:
    error = "TransientFault: \x1b]0;owned\x07" + "x" * 490
    park(
        settings,
        "combat",
        [parked_row("s3", "e\x1b[1m", value, "retrying", attempts=1, due_at=1e300, last_error=error)],
    )
    (record,) = views.saga(settings, "s3")["parked"]
    assert record["event_type"] is None or (len(record["event_type"]) <= 100 and "\x1b" not in record["event_type"])
    assert "\x1b" not in record["last_error"] and len(record["last_error"]) <= 500
    assert "\x1b" not in record["event_id"] and record["next_attempt_at"] is None  # a time no calendar has
    assert "\x1b" not in views.render_saga(views.saga(settings, "s3"))
    json.dumps(record, allow_nan=False)


def test_a_saga_nothing_holds_has_no_parked_records(settings: Settings) -> None:
    assert views.saga(settings, "nowhere")["parked"] == []  # no database at all yet
    park(settings, "status", [])
    assert views.saga(settings, "nowhere")["parked"] == []
