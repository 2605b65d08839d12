"""engine.cli and engine.client for a saga the engine has never seen (the toy saga): the generic verbs,
a program's own verbs plugged in, the one-line errors, the start envelope."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.cli import Cli, Verb
from engine.client import Client
from tests.toy.events import Asked, FirstDone
from tests.toy.saga import TOY, Settings


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("POKESAGA_DATA_DIR", str(tmp_path))


def toy(*argv: str, **options: Any) -> int:
    return cli.main(TOY, list(argv), settings=Settings, prog="toy", **options)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["start", '{"name": 7}'], "toy start: Asked: name: Input should be a valid string\n"),
        (["start", "{not json"], "toy start: Asked: Invalid JSON: key must be a string at line 1 column 2\n"),
        (["start", '{"name": "a"}'], "toy start: no broker: set KAFKA_BOOTSTRAP_SERVERS\n"),
        (["dlq", "list", "toy.first"], "toy dlq: no broker: set KAFKA_BOOTSTRAP_SERVERS\n"),
        (["frobnicate"], "toy: argument command: invalid choice: 'frobnicate' (choose from "),
        (["start", "{}", "--saga-id", ""], "toy start: argument --saga-id: a saga id cannot be empty\n"),
        (["start", "{}", "--saga-id", "x" * 300], "toy start: argument --saga-id: a saga id is at most 200 characters"),
        (["start", "{}", "--saga-id", "a\nb"], "toy start: argument --saga-id: a saga id is printable text"),
        (["start", "{}", "--timeout", "nan"], "toy start: argument --timeout: expected a number of seconds above 0"),
        (["start", "{}", "--timeout", "-5"], "toy start: argument --timeout: expected a number of seconds above 0"),
    ],
)
def test_each_error_is_one_line_named_after_the_program(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert toy(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1


def test_run_names_the_saga_services_when_given_another(capsys: pytest.CaptureFixture[str]) -> None:
    assert toy("run", "pikachu") == 2
    assert "unknown service 'pikachu'; expected one of first, second" in capsys.readouterr().err


def test_a_local_broker_is_asked_for_only_when_none_is_configured(capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[tuple[str, ...]] = []

    def local(settings: Settings) -> str | None:
        asked.append(settings.SERVICES)  # the saga's settings, bound to its services
        return None

    assert toy("start", '{"name": "a"}', local_broker=local) == 2
    assert asked == [tuple(TOY.services)]
    assert capsys.readouterr().err == "toy start: no broker: set KAFKA_BOOTSTRAP_SERVERS or run 'toy kafka start'\n"


def test_a_program_adds_its_own_verbs_and_replaces_one_by_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[tuple[str, str]] = []

    def add_hello(commands: Any, cli: Cli) -> argparse.ArgumentParser:
        hello = commands.add_parser("hello")
        hello.add_argument("who")
        return hello

    def hello(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
        ran.append((cli.saga.name, args.who))
        return 3

    def add_trace(commands: Any, cli: Cli) -> None:
        commands.add_parser("trace")

    def trace(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
        ran.append((cli.prog, "trace"))
        return 0

    groups = [{"hello": Verb(add_hello, hello)}, {"trace": Verb(add_trace, trace)}]
    assert toy("hello", "world", groups=groups) == 3
    assert toy("trace", groups=groups) == 0
    assert ran == [(TOY.name, "world"), ("toy", "trace")]
    verbs = ["start", "trace", "inspect", "run", "db", "replay", "dlq", "schemas", "acls", "hello"]
    assert list(cli.verbs(groups)) == verbs


def test_inspect_saga_reads_no_database_that_does_not_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert toy("inspect", "saga", "s-1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"saga": "s-1", "first": None, "second": None, "parked": []}
    assert toy("inspect", "saga", "s-1") == 0
    assert capsys.readouterr().out.splitlines() == ["saga s-1", "  first   -", "  second  -"]
    assert list(tmp_path.iterdir()) == []


def test_the_client_wraps_the_start_event_with_its_saga_id_and_deadline() -> None:
    client = Client(TOY, Settings())
    envelope = client.envelope(Asked(name="a"), "s-1", timedelta(seconds=30))
    assert (envelope.type, envelope.sagaid, envelope.source, envelope.causationid) == (
        "Asked",
        "s-1",
        "toy/client",
        None,
    )
    assert envelope.sagadeadline is not None
    assert timedelta(seconds=25) < envelope.sagadeadline - datetime.now(UTC) <= timedelta(seconds=30)
    assert client.outcome_topics == ["toy.outcomes"]
    with pytest.raises(ValueError, match="FirstDone does not start the toy saga; expected Asked"):
        client.envelope(FirstDone(name="a"))


def test_acls_prints_the_table_then_a_kafka_acls_line_each_with_no_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert toy("--bootstrap-servers", "b:9096", "acls") == 0
    table, commands = capsys.readouterr().out.split("\n\n")
    assert table.splitlines()[0].split() == ["PRINCIPAL", "OPERATION", "RESOURCE", "NAME", "WHY"]
    assert "User:second   Write      Topic     toy.outcomes" in table
    lines = commands.strip().splitlines()
    assert len(lines) == len(table.splitlines()) - 1
    start = "kafka-acls.sh --bootstrap-server b:9096 --add --allow-principal User:"
    assert all(line.startswith(start) for line in lines)
    assert toy("acls", "--commands", "--command-config", "admin.properties") == 0
    only = capsys.readouterr().out.strip().splitlines()
    assert only and all(" --command-config admin.properties --add " in line for line in only)
    assert toy("acls", "--json") == 0
    assert {"principal", "resource", "name", "operation", "why"} == set(json.loads(capsys.readouterr().out)[0])


def test_acls_refuses_a_principal_two_roles_would_share_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert toy("acls", "--starter", "first") == 2
    err = capsys.readouterr().err
    assert err.startswith("toy acls: principal User:first would be two roles'") and err.count("\n") == 1
    assert toy("acls", "--apply") == 2  # where to apply them: said before anything is done
    assert capsys.readouterr().err == "toy acls --apply: no broker: set KAFKA_BOOTSTRAP_SERVERS\n"
