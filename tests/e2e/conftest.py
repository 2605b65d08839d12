"""End-to-end: the four services as separate OS processes, driven only through topics and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from capture import views
from capture.bootstrap import GROUP_TOPICS
from capture.processes import ServiceProcess, settings_env, stop_all
from capture.settings import SERVICES, Settings
from contracts.events import Pokemon, Status
from contracts.rng import saga_rng
from engine.broker import kafka
from services.combat.model import false_swipe
from services.pokeball.model import shakes
from tests.databases import database_urls
from tests.support import eventually

CERTAIN = {"catch_rate": 255, "level": 20, "hp": 10}  # a >= 255 once paralyzed: always caught
HARD = {"name": "Mewtwo", "level": 70, "catch_rate": 3}  # nearly never caught

GROUPS = GROUP_TOPICS  # every participant's consumer group and the topics it reads


class Cluster:
    """The services as named processes (``status``, ``status#2`` for a second instance)."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.processes: dict[str, ServiceProcess] = {}
        self.exits: list[tuple[str, int | None]] = []
        self.died: list[str] = []  # found dead when asked to stop

    def start(self, name: str, **env: str) -> ServiceProcess:
        target = name.split("#")[0]
        log_dir = Path(self.settings.data_dir) / "logs"
        process = ServiceProcess(target, self.settings, log_dir, extra_env={**self.env, **env})
        process.log_path = log_dir / f"{name.replace('#', '-')}.log"
        self.processes[name] = process.start()
        return process

    def stop(self, name: str) -> int | None:
        process = self.processes[name]
        if process.proc is not None and not process.alive:  # it left before it was asked to
            self.died.append(name)
        code = process.stop()
        self.exits.append((name, code))
        return code

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    async def joined(self) -> None:
        """Every consumer group has a live member again."""
        await eventually(lambda: kafka.groups_stable(self.settings.bootstrap, GROUPS), timeout=60, what="consuming")

    def wait_joined(self) -> None:
        asyncio.run(self.joined())


@contextlib.contextmanager
def cluster(
    bootstrap: str,
    data: Path,
    instances: tuple[str, ...] = SERVICES,
    per_instance: dict[str, dict[str, str]] | None = None,
    **env: str,
) -> Iterator[Cluster]:
    """Every service (each also running its compensator) in its own process, with ``env``
    (and ``per_instance[name]`` for that one)."""
    settings = Settings(kafka_bootstrap_servers=bootstrap, data_dir=data, **database_urls(data.name))
    running = Cluster(settings, env)
    for name in instances:
        running.start(name, **(per_instance or {}).get(name, {}))
    with supervised(running, data / "logs"):
        yield running


@contextlib.contextmanager
def supervised(running: Cluster, log_dir: Path) -> Iterator[Cluster]:
    """``running`` once every group has joined; on the way out, every process stopped, and none
    may have died meanwhile or stopped other than cleanly."""
    try:
        running.wait_joined()
        yield running
    finally:
        died = running.died + [n for n, p in running.processes.items() if not p.alive and not p.terminated]
        stop_all(list(running.processes.values()))
    codes = {n: p.proc.returncode if p.proc else None for n, p in running.processes.items()}
    assert not died, f"service processes died during the tests: {died} (logs in {log_dir})"
    assert set(codes.values()) == {0}, f"services did not stop cleanly: {codes}"


@contextlib.contextmanager
def services(bootstrap: str, data: Path, **env: str) -> Iterator[Settings]:
    """The four services, one process each; yields their settings."""
    with cluster(bootstrap, data, **env) as running:
        yield running.settings


@pytest.fixture(scope="module")
def running(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with services(kafka_bootstrap, tmp_path_factory.mktemp("e2e")) as settings:
        yield settings


def pokesaga(
    settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The CLI, as a user runs it, against these services' broker and databases (and ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "capture.cli", *args],
        env=settings_env(settings) | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bench_figures(settings: Settings, *args: str) -> dict[str, Any]:
    """``pokesaga bench ARGS`` run to its end, successfully: the one JSON line it prints."""
    done = pokesaga(settings, "bench", *args, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = done.stdout.strip().splitlines()
    return json.loads(line)  # type: ignore[no-any-return]


def inspect_trainer(settings: Settings, name: str) -> dict[str, Any]:
    shown = pokesaga(settings, "inspect", "trainer", name, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


async def produce_raw(bootstrap: str, topic: str, value: bytes, key: bytes) -> None:
    """A plain Kafka producer, no pokesaga code: what any client does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def predicted_catch(saga_id: str, lead: dict[str, Any], pokemon: dict[str, Any]) -> bool:
    """What the rules say this saga's one throw does: every draw derives from the saga id."""
    wild = Pokemon.model_validate({**pokemon, "status": Status.PARALYZED})
    hit = false_swipe(Pokemon.model_validate(lead), wild, saga_rng(saga_id, "damage"))
    return shakes(wild.model_copy(update={"hp": hit.hp_after}), saga_rng(saga_id, "catch")) == 4


def breaking_free(prefix: str, pokemon: dict[str, Any], lead: dict[str, Any] | None = None) -> str:
    """A saga id whose throw the rules say will fail."""
    lead = lead or {"name": "Pikachu", "level": 60}
    return next(f"{prefix}-{i}" for i in range(10_000) if not predicted_catch(f"{prefix}-{i}", lead, pokemon))


def hand_written(saga_id: str, trainer: str, pokemon: dict[str, Any], lead: dict[str, Any] | None = None) -> bytes:
    """A start event as a client that never saw this code writes it."""
    document = {
        "specversion": "1.0", "id": f"client-{saga_id}", "source": "any-client", "type": "PokemonEncountered",
        "time": "2026-11-23T10:00:00Z", "subject": saga_id, "sagaid": saga_id,
        "datacontenttype": "application/json", "dataversion": 1,
        "data": {"trainer": {"name": trainer, "lead": lead or {"name": "Pikachu", "level": 60}}, "pokemon": pokemon},
    }  # fmt: skip
    return json.dumps(document).encode()


def assert_unwound(settings: Settings, saga: str, spent_ball: bool = False) -> None:
    """Each service's record of the saga shows its change undone."""
    row = views.saga(settings, saga)
    assert row["status"]["status"] == row["status"]["previous_status"], row["status"]
    if row["combat"] is not None:
        assert row["combat"]["hp"] == row["combat"]["hp_before"], row["combat"]
    if row["pokeball"] is not None:
        thrown = row["pokeball"]
        assert thrown["outcome"] != "caught" or thrown["refunded"], thrown
        assert (thrown["outcome"] == "broke_free") == spent_ball
    if row["delivery"] is not None:
        assert row["delivery"]["location"] is None
