"""A wrong argument gets one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capture.cli import main
from capture.settings import Settings
from capture.starter import start_event
from engine import faults
from engine.cli.common import deadline, duration
from engine.observe import health
from engine.observe.health import PortUnavailable

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["frobnicate"], "invalid choice"),
        (["start", "--trainer", "Sacha", "--pokemon"], "--pokemon"),
        (["start", "--pokemon", "Agumon", "--trainer", "Sacha"], "unknown Pokémon"),
        (["start", "--pokemon", "Mewtoo", "--trainer", "Sacha"], "unknown Pokémon 'Mewtoo' (did you mean Mewtwo?)"),
        (["start", "--pokemon", "Mew", "--trainer", "Sacha", "--level", "abc"], "whole number"),
        (["start", "--pokemon", "Mew", "--trainer", "Sacha", "--level", "101"], "less than or equal to 100"),
        (["start", "--pokemon", "Mew", "--trainer", ""], "at least 1 character"),
        (["start", "--deadline", "30x"], "argument --deadline: expected a duration such as 500ms, 30s"),
        (["start", "--deadline", "30"], "or an RFC 3339 time"),
        (["start", "--deadline", "0s"], "expected a duration above 0"),
        (["start", "--deadline", "2020-01-01T00:00:00Z"], "'2020-01-01T00:00:00Z' is already past"),
        (["start", "--deadline", f"{10**30}d"], "too long a duration"),
        (["bench", "--stall-one", "--null-relay"], "--stall-one runs the services"),
        (["bench", "--stall-one", "--stall-seconds", "0"], "--stall-seconds must be above 0"),
        (["bench", "--compare-secure", "--compare-null"], "secured broker: not with --compare-null\n"),
        (["bench", "--secure", "--failover", "--console"], "secured broker: not with --console, --failover\n"),
        (["--bootstrap-servers", "localhost:9", "bench", "--secure"], "--secure starts a private secured local"),
        (["run", "pikachu"], "unknown service"),
        (["inspect", "gym", "x"], "invalid choice"),
        (["kafka", "restart"], "invalid choice"),
        (["kafka", "stop", "--secure"], "--secure starts one secured broker"),
        (["kafka", "start", "--secure", "--brokers", "3"], "--secure starts one secured broker"),
        (["acls", "--tracker", "status"], "principal User:status would be two roles'"),
    ],
)
def test_a_wrong_argument_gets_a_one_line_error(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


MEW = ["start", "--pokemon", "Mew", "--trainer", "Sacha"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([*MEW, "--deadline", "9" * 400 + "s"], "too long a duration"),
        ([*MEW, "--deadline", "x" * 10_000], "expected a duration such as 500ms"),
        ([*MEW, "--deadline", "1" * 400 + "x"], "expected a duration such as 500ms"),
        ([*MEW, "--level", "9" * 5000], "expected a whole number"),
        ([*MEW, "--level", "-" + "9" * 4000], "expected a number >= 0"),
        (["start", "--pokemon", "x" * 10_000, "--trainer", "Sacha"], "unknown Pokémon"),
        (["replay", "status", "--to-datetime", "x" * 10_000], "expected an ISO date-time"),
        (["x" * 10_000], "invalid choice"),
        (["--partitions", "7" * 10_000, "start"], "expected a whole number"),
    ],
)
def test_a_wrong_argument_is_echoed_cut_to_a_short_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "…" in err
    assert len(err.strip().splitlines()) == 1 and len(err) < 500, err


@pytest.mark.parametrize(
    "variable", ["POKESAGA_PARTITIONS", "POKESAGA_CRASH_AT", "POKESAGA_STATUS_DB_URL", "POKESAGA_STALL"]
)
def test_a_long_bad_setting_is_echoed_cut_to_a_short_line(
    variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "m" * 10_000)
    assert main(["inspect", "trainer", "Nobody"]) == 2
    err = capsys.readouterr().err
    assert variable in err and "…" in err
    assert len(err.strip().splitlines()) == 1 and len(err) < 500, err


def test_an_echoed_value_is_shown_whole_up_to_60_characters() -> None:
    with pytest.raises(ValueError, match=r"got 'x{60}'$"):
        duration("x" * 60)
    with pytest.raises(ValueError, match=r"got 'x{60}…'$"):
        duration("x" * 61)


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("POKESAGA_PARTITIONS", "many", "POKESAGA_PARTITIONS: Input should be a valid integer"),
        ("POKESAGA_CRASH_AT", "after-mark", "expected one of after-local-commit, after-publish, after-offset-commit"),
        ("POKESAGA_STATUS_DB_URL", "postgres:/nohost", "POKESAGA_STATUS_DB_URL: could not parse 'postgres:/nohost'"),
        ("POKESAGA_COMPENSATION_RETRY", '{"maximum_attempts": }', "POKESAGA_COMPENSATION_RETRY: not valid JSON"),
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092,", "KAFKA_BOOTSTRAP_SERVERS: expected host:port"),
        ("POKESAGA_STALL", "combat=stall-", "POKESAGA_STALL: expected PARTICIPANT=SAGA_ID_PREFIX:SECONDS"),
        ("POKESAGA_STALL", "combt=stall-:10", "POKESAGA_STALL: unknown participant 'combt' (did you mean 'combat'?)"),
    ],
)
def test_a_bad_setting_in_the_environment_gets_a_one_line_error(
    variable: str, value: str, needle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["inspect", "trainer", "Nobody"]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--partitions", "300", "inspect", "trainer", "Nobody"], "pokesaga: --partitions: "),
        (["--bootstrap-servers", "kafka:x", "inspect", "trainer", "Nobody"], "pokesaga: --bootstrap-servers: "),
    ],
)
def test_a_bad_setting_given_by_a_flag_is_named_by_the_flag(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(needle) and len(err.strip().splitlines()) == 1, err


def test_a_valid_crash_point_and_an_empty_one_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    for point in faults.POINTS:
        assert Settings(crash_at=point).crash_at == point
    monkeypatch.setenv("POKESAGA_CRASH_AT", "")
    assert Settings().crash_at is None


def test_the_metrics_server_names_its_setting_when_the_port_is_taken() -> None:
    """Taken between the CLI's check and the bind: still one line, naming the setting."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortUnavailable, match=f"POKESAGA_METRICS_PORT: .*127.0.0.1:{port}"):
            health.serve_http(port, "127.0.0.1")


def test_inspecting_an_unknown_trainer_shows_empty_state(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path), "inspect", "trainer", "Nobody", "--json"]) == 0
    assert '"trainer": "Nobody"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h", 3600), ("1d", 86400), ("1m30s", 90), ("1.5s", 1.5)],
)
def test_a_duration_takes_a_unit_and_may_chain_them(text: str, seconds: float) -> None:
    assert duration(text) == timedelta(seconds=seconds)


def test_a_deadline_is_a_duration_from_now() -> None:
    before = datetime.now(UTC)
    until = deadline("30s")
    assert before + timedelta(seconds=30) <= until <= datetime.now(UTC) + timedelta(seconds=30)
    assert until.tzinfo is not None


def test_a_deadline_may_be_an_rfc3339_time_and_without_an_offset_is_utc() -> None:
    assert deadline("2099-01-01T10:00:00+02:00") == datetime(2099, 1, 1, 8, tzinfo=UTC)
    assert deadline("2099-01-01T10:00:00") == datetime(2099, 1, 1, 10, tzinfo=UTC)


def test_the_start_event_carries_its_deadline_as_an_rfc3339_extension() -> None:
    until = datetime(2099, 1, 1, 10, 0, 30, 500000, tzinfo=UTC)
    document = json.loads(start_event("s-1", {"name": "Sacha"}, {"name": "Pidgey"}, deadline=until).to_json())
    assert document["sagadeadline"] == "2099-01-01T10:00:30.500000Z"
    assert "sagadeadline" not in json.loads(start_event("s-2", {"name": "Sacha"}, {"name": "Pidgey"}).to_json())


AS_FAR_AS_THE_LOOP = """
import sys
from engine.cli import services

def replicated(settings, names, internal=()):
    return settings

def loop(main, use_uvloop, asked=False, tls=False):
    main.close()  # the service's coroutine, handed to the loop: never run
    print("handed to the loop")

services.check_replication = replicated  # no broker is contacted
services.run_loop = loop
from capture.entry import main
try:
    code = main()
finally:
    print(sorted(n for n in sys.modules if n.split(".")[0] == "bench" or n.split(".")[:2] == ["engine", "local"]))
sys.exit(code)
"""


@pytest.mark.parametrize("argv", [["run", "status"], ["run", "compensations.combat"], ["--help"], ["db", "--help"]])
def test_the_product_cli_imports_neither_the_bench_nor_the_local_broker_unless_the_command_needs_it(
    argv: list[str], tmp_path: Path
) -> None:
    """``pokesaga run status`` with a broker configured: parsed, settings read, databases and port checked,
    the service resolved and handed to the loop — and no module of the bench (bench) or of the local broker
    (engine.local) imported."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "POKESAGA_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", AS_FAR_AS_THE_LOOP, *argv], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    *said, development = done.stdout.splitlines()
    assert development == "[]"
    if argv[0] == "run":
        assert said == ["handed to the loop"]


def test_without_a_broker_configured_run_looks_for_the_local_one() -> None:
    """The one case ``run`` needs the local broker (engine.local): KAFKA_BOOTSTRAP_SERVERS unset, it asks for its
    address."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["POKESAGA_KAFKA_CACHE_DIR"] = "/nonexistent/pokesaga-kafka"
    done = subprocess.run(
        [sys.executable, "-m", "capture", "trace", "x"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert (done.returncode, done.stderr) == (
        2,
        "pokesaga trace: no broker: set KAFKA_BOOTSTRAP_SERVERS or run 'pokesaga kafka start'\n",
    )
