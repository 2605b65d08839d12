"""docker-compose.yml run for real: the images built from the Dockerfile (and, with no registry,
the stand-ins), every container up and healthy, sagas started from the host with a plain Kafka
producer, a service container killed and a Kafka container restarted under load, the host's
``pokesaga`` reading and repairing the PostgreSQL container's databases, Prometheus and the
tracker's console as a user opens them, and ``docker compose down -v`` leaving nothing.

The tests run in this order on one compose project (the package's ``stack``)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from capture.saga import CAPTURE
from capture.settings import SERVICES
from tests.containers.stack import LONG_RUNNING, Stack, outcomes, publish, start_event, until

# The first test's setup builds the images (a few minutes after `docker system prune -a`) and
# brings the project up.
pytestmark = pytest.mark.timeout(1200)

RUN = os.getpid()
WILD = ["Pidgey", "Rattata", "Caterpie", "Weedle", "Zubat", "Geodude", "Magikarp", "Oddish", "Psyduck", "Mewtwo"]
CHAIN = set(CAPTURE.participants)  # every participant, compensators included


def start(stack: Stack, prefix: str, count: int, trainers: int = 1, first: int = 0) -> list[str]:
    """``count`` captures started from the host, shared among ``trainers`` trainers (five balls
    each); their saga ids, ``TRAINER-i`` (``i`` from ``first``)."""
    sagas = [f"{prefix}{i % trainers}-{i}" for i in range(first, first + count)]
    events = [(s, start_event(s, s.rsplit("-", 1)[0], WILD[i % len(WILD)])) for i, s in enumerate(sagas)]
    publish(stack.bootstrap, events)
    return sagas


def ended(stack: Stack, sagas: list[str], timeout: float = 180) -> dict[str, set[tuple[str, str]]]:
    """Once every saga has an outcome: each saga's outcomes (distinct event ids)."""
    wanted = set(sagas)

    def check() -> dict[str, set[tuple[str, str]]] | None:
        found = {s: o for s, o in outcomes(stack.bootstrap).items() if s in wanted}
        return found if len(found) == len(wanted) else None

    try:
        return until(check, timeout, f"an outcome for each of {len(sagas)} sagas", every=1)  # type: ignore[no-any-return]
    except AssertionError as failed:  # what the containers said, to see why
        logs = stack.compose("logs", "--tail", "25", "--no-color", *LONG_RUNNING, timeout=60, check=False).stdout
        raise AssertionError(f"{failed}\n{stack.compose('ps', '--all', check=False).stdout}{logs}") from None


def assert_one_outcome_each(found: dict[str, set[tuple[str, str]]]) -> None:
    twice = {saga: sorted(o) for saga, o in found.items() if len(o) != 1}
    assert twice == {}, f"sagas without exactly one outcome: {twice}"
    assert {t for o in found.values() for _, t in o} <= {"PokemonDelivered", "CaptureFailed"}


def trainer(stack: Stack, name: str) -> dict[str, Any]:
    """``pokesaga inspect trainer NAME --json`` from the host, on the PostgreSQL container."""
    return json.loads(stack.pokesaga("inspect", "trainer", name, "--json").stdout)  # type: ignore[no-any-return]


def assert_each_done_once(stack: Stack, sagas: list[str], found: dict[str, set[tuple[str, str]]]) -> None:
    """What each service's database holds, read from the host: every saga seen once by each
    service it reached, each ball spent once, each delivered Pokémon stored once."""
    by_trainer: dict[str, list[str]] = {}
    for saga in sagas:
        by_trainer.setdefault(saga.rsplit("-", 1)[0], []).append(saga)
    delivered = {s for s, o in found.items() if {t for _, t in o} == {"PokemonDelivered"}}
    for name, theirs in by_trainer.items():
        held = trainer(stack, name)
        seen = [r["saga_id"] for r in held["status"]["sagas"]]
        assert sorted(seen) == sorted(theirs), f"{name}: status saw {seen}"
        for records in (held["combat"]["attacks"], held["pokeball"]["throws"]):
            ids = [r["saga_id"] for r in records]
            assert len(ids) == len(set(ids)) and set(ids) <= set(theirs), f"{name}: {ids}"
        spent = [t for t in held["pokeball"]["throws"] if t["ball"] is not None and not t["refunded"]]
        assert held["pokeball"]["balls"] + len(spent) == 5, f"{name}: {held['pokeball']}"
        stored = [p["saga_id"] for p in held["delivery"]["party"] + held["delivery"]["pc"]]
        assert sorted(stored) == sorted(delivered & set(theirs)), f"{name}: stored {stored}"


def test_every_container_is_up_healthy_and_runs_as_a_non_root_user(stack: Stack) -> None:
    containers = stack.containers()
    assert stack.unhealthy(LONG_RUNNING) == {}
    assert containers["topics"]["State"] == "exited" and containers["topics"]["ExitCode"] == 0
    assert containers["prometheus"]["State"] == "running"
    image = json.loads(stack.docker("image", "inspect", "pokesaga:latest").stdout)[0]["Config"]
    assert image["User"] == "pokesaga"
    assert image["Healthcheck"]["Test"] == ["CMD", "python3", "/usr/local/bin/pokesaga-healthcheck"]
    assert {"9100/tcp", "6066/tcp"} <= set(image["ExposedPorts"])
    for service in (*SERVICES, "tracker"):  # the image's own HEALTHCHECK, in each kind of container
        assert stack.compose("exec", "-T", service, "id", "-u").stdout.strip() == "10001"
        assert stack.compose("exec", "-T", service, "python3", "/usr/local/bin/pokesaga-healthcheck").returncode == 0


def test_start_events_written_by_hand_on_the_host_each_reach_exactly_one_outcome(stack: Stack) -> None:
    sagas = start(stack, f"Red{RUN}.", 20, trainers=4)
    found = ended(stack, sagas)
    assert_one_outcome_each(found)
    assert_each_done_once(stack, sagas, found)


def test_the_readme_commands_start_a_capture_from_the_cli_container_and_from_the_host(stack: Stack) -> None:
    outcome = ("PokemonDelivered: ", "CaptureFailed: ")
    inside = stack.compose("run", "--rm", "cli", "pokesaga", "start", "--trainer", f"Sacha{RUN}", "--wait")
    assert inside.stdout.strip().splitlines()[-1].startswith(outcome), inside.stdout
    outside = stack.pokesaga("start", "--trainer", f"Ash{RUN}", "--wait")
    assert outside.stdout.strip().splitlines()[-1].startswith(outcome), outside.stdout
    shown = stack.pokesaga("inspect", "trainer", f"Sacha{RUN}").stdout
    assert shown.splitlines()[0] == f"trainer Sacha{RUN}" and "throws: 1" in shown, shown


def test_prometheus_scrapes_every_service_and_the_tracker(stack: Stack) -> None:
    def targets() -> dict[str, str] | None:
        answer = stack.json("HOST_PORT_PROMETHEUS", "/api/v1/targets")
        if answer is None:
            return None
        found = {t["labels"]["instance"]: t["health"] for t in answer["data"]["activeTargets"]}
        return found if set(found.values()) == {"up"} else None

    up = until(targets, 60, "every Prometheus target up", every=1)
    assert set(up) == {f"{s}:9100" for s in SERVICES} | {"tracker:6066"}
    answer = stack.json("HOST_PORT_PROMETHEUS", "/api/v1/query?query=sum(pokesaga_events_consumed_total)")
    assert float(answer["data"]["result"][0]["value"][1]) > 0


def test_the_tracker_console_answers_and_shows_every_participant_live(stack: Stack) -> None:
    status, page = stack.http("HOST_PORT_TRACKER", "/")
    assert status == 200 and b"<html" in page.lower()

    def live() -> dict[str, Any] | None:
        overview = stack.json("HOST_PORT_TRACKER", "/overview")
        participants = (overview or {}).get("participants", {})
        ok = set(participants) >= CHAIN and not any(p.get("down") for p in participants.values())
        return participants if ok else None

    participants = until(live, 60, "every participant on the console, none down", every=1)
    assert set(participants) >= CHAIN
    seen = stack.json("HOST_PORT_TRACKER", "/sagas?limit=500")
    assert {f"Red{RUN}.{i % 4}-{i}" for i in range(20)} <= {s["saga_id"] for s in seen["sagas"]}


def test_a_service_container_killed_mid_run_and_up_again_loses_nothing_and_does_nothing_twice(stack: Stack) -> None:
    sagas = start(stack, f"Blue{RUN}.", 30, trainers=6)
    until(lambda: len(set(sagas) & set(outcomes(stack.bootstrap))) >= 3, 120, "the first outcomes", every=0.2)
    stack.compose("kill", "-s", "SIGKILL", "pokeball")
    assert stack.containers()["pokeball"]["State"] == "exited"
    sagas += start(stack, f"Blue{RUN}.", 30, trainers=6, first=30)  # more arrive while it is down
    stack.compose("up", "-d", "--wait", "pokeball", timeout=300)
    found = ended(stack, sagas)
    assert_one_outcome_each(found)
    assert_each_done_once(stack, sagas, found)


def test_the_kafka_container_restarted_under_the_services_loses_nothing(stack: Stack) -> None:
    sagas = start(stack, f"Green{RUN}.", 20, trainers=4)
    stack.compose("restart", "kafka", timeout=300)
    stack.await_healthy(LONG_RUNNING)
    sagas += start(stack, f"Green{RUN}.", 20, trainers=4, first=20)
    found = ended(stack, sagas)
    assert_one_outcome_each(found)
    assert_each_done_once(stack, sagas, found)


def test_replay_rebuilds_the_lost_database_of_a_stopped_service_container(stack: Stack) -> None:
    name = f"Blue{RUN}.0"  # its sagas ended in the kill test: its bag and throws are in pokeball's database
    before = trainer(stack, name)
    stack.compose("stop", "pokeball")
    psql = ["exec", "-T", "postgres", "psql", "-U", "pokesaga", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
    stack.compose(*psql, "-c", "DROP DATABASE pokeball", "-c", "CREATE DATABASE pokeball")
    assert trainer(stack, name)["pokeball"] != before["pokeball"]
    plan = stack.pokesaga("replay", "pokeball", "--to-earliest", "--dry-run").stdout
    assert "pokeball" in plan
    moved = stack.pokesaga("replay", "pokeball", "--to-earliest").stdout
    assert "start pokeball to rebuild" in moved, moved
    stack.compose("start", "pokeball")
    until(lambda: trainer(stack, name)["pokeball"] == before["pokeball"], 120, "the pokeball database rebuilt", every=1)
    sagas = start(stack, f"Yellow{RUN}.", 10, trainers=2)
    found = ended(stack, sagas)
    assert_one_outcome_each(found)
    assert_each_done_once(stack, sagas, found)


def test_compose_down_v_leaves_nothing_of_the_project(stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.docker("ps", "--all", "--quiet", "--filter", label).stdout.split() == []
    assert stack.docker("volume", "ls", "--quiet", "--filter", label).stdout.split() == []
    assert stack.docker("network", "ls", "--quiet", "--filter", label).stdout.split() == []
