"""End-to-end: the four services as separate OS processes, driven only through topics and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import topics
from runtime.processes import ServiceProcess, stop_all
from runtime.settings import SERVICES, Settings
from tests.support import eventually, groups_joined

GROUPS = {
    "status": [topics.STATUS],
    "combat": [topics.COMBAT],
    "pokeball": [topics.POKEBALL],
    "delivery": [topics.DELIVERY],
    "status.compensations": [topics.FAILURES],
    "combat.compensations": [topics.FAILURES],
    "pokeball.compensations": [topics.FAILURES],
}


@pytest.fixture(scope="module")
def running(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Every service (each also running its compensator) in its own process."""
    data = tmp_path_factory.mktemp("e2e")
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=data)
    processes = [ServiceProcess(service, settings, Path(data) / "logs").start() for service in SERVICES]
    asyncio.run(eventually(lambda: groups_joined(kafka_bootstrap, GROUPS), timeout=60, what="services consuming"))
    yield settings
    alive = [p.target for p in processes if not p.alive]
    stop_all(processes)
    assert not alive, f"service processes died during the tests: {alive}"
    codes = {p.target: p.proc.returncode if p.proc else None for p in processes}
    assert set(codes.values()) == {0}, f"services did not stop cleanly: {codes}"
