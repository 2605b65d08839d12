"""Bad configuration, as a tired operator writes it: one line on stderr naming the setting,
exit code 1 or 2, never a traceback, and never a service left running.

The CLI runs as a subprocess, as a user runs it, against a real broker: the error must show
even though everything else works. A setting wrong in itself is refused before any broker
connection, which the last tests show with a broker address where nothing listens.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.processes import settings_env
from capture.settings import Settings
from engine import faults
from engine.local.broker import free_port

pytestmark = pytest.mark.no_database  # every test brings its own database URL, or none

COMMANDS = {
    "run": ("run", "status"),
    "db": ("db", "upgrade", "all"),
    "inspect": ("inspect", "trainer", "Ash"),
}


def user_env(bootstrap: str, data: Path, **overrides: str) -> dict[str, str]:
    """What a user's shell holds: the broker, a data folder, and the settings under test
    (none inherited from the shell that runs the tests)."""
    env = settings_env(Settings(kafka_bootstrap_servers=bootstrap, data_dir=data))
    ours = {"POKESAGA_DATA_DIR", "POKESAGA_PARTITIONS"}
    env = {k: v for k, v in env.items() if not k.startswith("POKESAGA_") or k in ours}
    return env | overrides


def pokesaga(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process. A command that does not stop within the deadline is a
    service that started despite its configuration: subprocess.run kills it and the test fails."""
    return subprocess.run(
        [sys.executable, "-m", "capture.cli", *args], env=env, capture_output=True, text=True, timeout=25
    )


def refused(done: subprocess.CompletedProcess[str], *needles: str, code: int | None = None) -> str:
    """``done`` failed with one non-empty line on stderr holding every needle; that line."""
    lines = done.stderr.splitlines()
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    assert code is None or done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].strip(), done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return user_env(kafka_bootstrap, tmp_path / "data")


@contextlib.contextmanager
def port_held() -> Iterator[int]:
    """A loopback port another process listens on, for as long as the block runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


# -- databases: every command that opens one ----------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("url", ["not-a-url", "postgresql://x:s3cret@:notaport/db"])
def test_an_unparseable_database_url_is_named(env: dict[str, str], command: str, url: str) -> None:
    done = pokesaga(env | {"POKESAGA_STATUS_DB_URL": url}, *COMMANDS[command])
    line = refused(done, "POKESAGA_STATUS_DB_URL", "could not parse", "postgresql+psycopg://", code=2)
    assert "s3cret" not in line  # a password is never printed


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_database_is_named(env: dict[str, str], command: str) -> None:
    port = free_port()  # nothing listens there: PostgreSQL on a closed port
    done = pokesaga(
        env | {"POKESAGA_STATUS_DB_URL": f"postgresql+psycopg://u:s3cret@127.0.0.1:{port}/db"}, *COMMANDS[command]
    )
    line = refused(done, "database unavailable: POKESAGA_STATUS_DB_URL", f"127.0.0.1:{port}", code=1)
    assert "s3cret" not in line


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql+mysqldb://u:p@127.0.0.1/db", "not installed"),  # mysqlclient is not among pokesaga's dependencies
        ("postgresql+asyncpg://u:p@127.0.0.1/db", "asyncio driver"),  # installed or not, it cannot serve
        ("cockroach://u:p@127.0.0.1/db", "unknown kind of database"),
    ],
)
def test_a_database_driver_that_cannot_serve_is_named(env: dict[str, str], command: str, url: str, needle: str) -> None:
    done = pokesaga(env | {"POKESAGA_STATUS_DB_URL": url}, *COMMANDS[command])
    refused(done, "POKESAGA_STATUS_DB_URL", needle, code=2)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_data_folder_under_a_file_is_named(env: dict[str, str], tmp_path: Path, command: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    done = pokesaga(env | {"POKESAGA_DATA_DIR": str(tmp_path / "file" / "sub")}, *COMMANDS[command])
    refused(done, "POKESAGA_DATA_DIR", str(tmp_path / "file"), code=1)
    assert not (tmp_path / "file").is_dir()


def test_a_data_folder_that_is_a_file_is_named_by_its_flag(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    done = pokesaga(env, "--data-dir", str(tmp_path / "file"), "run", "status")
    refused(done, "--data-dir", "is a file", code=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_data_folder_is_named(env: dict[str, str], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = pokesaga(env | {"POKESAGA_DATA_DIR": str(locked / "data")}, "run", "status")
    refused(done, "POKESAGA_DATA_DIR", code=1)


# -- ports ---------------------------------------------------------------------------


def test_a_metrics_port_in_use_is_named(env: dict[str, str]) -> None:
    with port_held() as port:
        done = pokesaga(env | {"POKESAGA_METRICS_PORT": str(port)}, "run", "status")
    refused(done, "POKESAGA_METRICS_PORT", f"127.0.0.1:{port}", "another process holds it", code=1)


def test_a_tracker_port_in_use_is_named(env: dict[str, str]) -> None:
    with port_held() as port:
        done = pokesaga(env | {"POKESAGA_TRACKER_PORT": str(port)}, "run", "tracker")
    refused(done, "POKESAGA_TRACKER_PORT", f"127.0.0.1:{port}", code=1)


def test_a_metrics_host_that_is_not_this_machine_is_named(env: dict[str, str]) -> None:
    done = pokesaga(env | {"POKESAGA_METRICS_PORT": "0", "POKESAGA_METRICS_HOST": "192.0.2.1"}, "run", "status")
    refused(done, "POKESAGA_METRICS_HOST", "192.0.2.1", code=1)


# -- typos ---------------------------------------------------------------------------

TYPOS = [
    ({"POKESAGA_CRASH_AT": "after-local-comit"}, ["POKESAGA_CRASH_AT", "'after-local-comit'", *faults.POINTS]),
    ({"POKESAGA_PARTITIONS": "three"}, ["POKESAGA_PARTITIONS", "'three'"]),
    ({"POKESAGA_METRICS_PORT": "91OO"}, ["POKESAGA_METRICS_PORT", "'91OO'"]),
    ({"POKESAGA_STEP_RETRY": "{pokeball: {maximum_attempts: 10}}"}, ["POKESAGA_STEP_RETRY", "not valid JSON"]),
    ({"POKESAGA_STEP_RETRY": '{"pokebal": {"maximum_attempts": 10}}'}, ["POKESAGA_STEP_RETRY", "'pokeball'"]),
    ({"POKESAGA_STEP_RETRY": '{"pokeball": {"max_attempts": 10}}'}, ["POKESAGA_STEP_RETRY", "maximum_attempts"]),
    ({"POKESAGA_RETRY__MAXIMUM_ATTEMPT": "10"}, ["POKESAGA_RETRY", "maximum_attempts"]),
    ({"POKESAGA_FAULTS": "status=lots"}, ["POKESAGA_FAULTS", "lots"]),
    ({"POKESAGA_STALL": "combat=stall-10"}, ["POKESAGA_STALL", "PARTICIPANT=SAGA_ID_PREFIX:SECONDS", "stall-10"]),
    ({"POKESAGA_STALL": "comabt=stall-:10"}, ["POKESAGA_STALL", "did you mean 'combat'?"]),
    ({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:90g2"}, ["KAFKA_BOOTSTRAP_SERVERS", "host:port"]),
    ({"POKESAGA_REPLICATION_FACTOR": "0"}, ["POKESAGA_REPLICATION_FACTOR", "greater than or equal to 1"]),
    ({"POKESAGA_HEARTBEAT_INTERVAL_MS": "5000"}, ["POKESAGA_HEARTBEAT_INTERVAL_MS", "POKESAGA_SESSION_TIMEOUT_MS"]),
    ({"POKESAGA_COMPENSATION_ATTEMPTS": "0"}, ["POKESAGA_COMPENSATION_ATTEMPTS", "whole number", "1 or more", "'0'"]),
    ({"POKESAGA_COMPENSATION_ATTEMPTS": "2.5"}, ["POKESAGA_COMPENSATION_ATTEMPTS", "whole number", "'2.5'"]),
    (
        {"POKESAGA_COMPENSATION_RETRY__MAXIMUM_ATTEMPTS": "0"},
        ["POKESAGA_COMPENSATION_RETRY", "maximum_attempts", "POKESAGA_COMPENSATION_ATTEMPTS"],
    ),
]


@pytest.mark.parametrize(("typo", "needles"), TYPOS, ids=[next(iter(t)) for t, _ in TYPOS])
def test_a_typo_in_a_setting_is_named(env: dict[str, str], typo: dict[str, str], needles: list[str]) -> None:
    refused(pokesaga(env | typo, "run", "status"), *needles, code=2)


def test_a_crash_point_typo_is_refused_by_every_command(env: dict[str, str]) -> None:
    for command in COMMANDS.values():
        refused(pokesaga(env | {"POKESAGA_CRASH_AT": "after-publsh"}, *command), "did you mean 'after-publish'?")


# -- before the broker ---------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        {"POKESAGA_STATUS_DB_URL": "not-a-url"},
        {"POKESAGA_STATUS_DB_URL": "mysql+mysqldb://u:p@127.0.0.1/db"},
        {"POKESAGA_CRASH_AT": "after-local-comit"},
        {"POKESAGA_STALL": "combat=stall-:soon"},
        {"POKESAGA_STEP_RETRY": "{"},
        {"POKESAGA_DATA_DIR": "/dev/null/data"},
    ],
    ids=lambda s: next(iter(s.values())),
)
def test_a_bad_setting_is_refused_before_any_broker_connection(tmp_path: Path, setting: dict[str, str]) -> None:
    """No broker listens at this address: a command that tried it would log its attempts
    (more lines) and say so; the one line is about the setting."""
    dead = f"127.0.0.1:{free_port()}"
    done = pokesaga(user_env(dead, tmp_path / "data") | setting, "run", "status")
    line = refused(done, next(iter(setting)))
    assert dead not in line


def test_a_port_in_use_is_refused_before_any_broker_connection(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with port_held() as port:
        done = pokesaga(user_env(dead, tmp_path / "data", POKESAGA_METRICS_PORT=str(port)), "run", "status")
    refused(done, "POKESAGA_METRICS_PORT", code=1)


# -- each service's database, in each of its forms; a variable no setting reads -----------


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ({"POKESAGA_DATABASES__STATUS": "not-a-url"}, ["pokesaga: POKESAGA_DATABASES__STATUS: could not parse"]),
        ({"POKESAGA_DATABASES": '{"status": "not-a-url"}'}, ["pokesaga: POKESAGA_DATABASES: status: could not parse"]),
        ({"POKESAGA_DATABASES": '{"stauts": "sqlite:///x.db"}'}, ["POKESAGA_DATABASES", "did you mean 'status'?"]),
        ({"POKESAGA_DATABASES": '{"status": '}, ["POKESAGA_DATABASES: not valid JSON"]),
        (
            {"POKESAGA_STATUS_DB_URL": "sqlite:///a.db", "POKESAGA_DATABASES__STATUS": "sqlite:///b.db"},
            ["POKESAGA_DATABASES__STATUS and POKESAGA_STATUS_DB_URL name different databases"],
        ),
    ],
    ids=["nested", "json", "unknown-service", "not-json", "two-forms"],
)
def test_a_bad_database_setting_is_named_in_the_form_it_was_given(
    tmp_path: Path, setting: dict[str, str], needles: list[str]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    refused(pokesaga(user_env(dead, tmp_path / "data") | setting, "run", "status"), *needles, code=2)


def test_each_form_of_a_database_setting_is_used(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # db upgrade needs no broker
    status, combat, pokeball = (tmp_path / f"{name}.db" for name in ("status", "combat", "pokeball"))
    env = user_env(dead, tmp_path / "data") | {
        "POKESAGA_DATABASES": f'{{"pokeball": "sqlite:///{pokeball}", "combat": "sqlite:///{tmp_path}/x.db"}}',
        "POKESAGA_DATABASES__COMBAT": f"sqlite:///{combat}",  # one service's variable wins over the mapping
        "POKESAGA_STATUS_DB_URL": f"sqlite:///{status}",
    }
    done = pokesaga(env, "db", "upgrade", "all")
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert status.exists() and combat.exists() and pokeball.exists() and not (tmp_path / "x.db").exists()
    assert (tmp_path / "data" / "delivery.db").exists()  # named nowhere: its SQLite file in the data folder


def test_a_misspelt_variable_is_said_once_with_the_setting_meant(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = user_env(dead, tmp_path / "data") | {"POKESAGA_PARTITONS": "6", "POKESAGA_TEST_POSTGRES": "unused"}
    done = pokesaga(env, "db", "upgrade", "all")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith("pokesaga: unknown setting POKESAGA_PARTITONS (did you mean POKESAGA_PARTITIONS?)")
