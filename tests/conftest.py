"""Fixtures shared by every suite: a real Kafka broker, provisioned as the CLI does it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.saga import CAPTURE
from capture.settings import Settings
from engine.broker import kafka
from engine.local.broker import PERFORMANCE_OPTS, LocalKafka, provisioned
from tests import databases

# The suites share brokers, and their services start on new databases: by default a new database
# is rebuilt from everything on the topics, other suites' sagas included. Child processes inherit
# this; tests/e2e/test_rebuild.py (a broker of its own) asks for the default explicitly.
os.environ.setdefault("POKESAGA_REBUILD_NEW_DATABASES", "false")
# The suites start some sixty local brokers, most for a minute or less: the JIT's first tier only. A broker
# then takes a third less CPU to start (6 s instead of 9 on these machines) and to idle, and the machine's
# two cores are what bound the suites' time (docs/testing.md; engine.local.broker.jvm_options).
os.environ.setdefault("KAFKA_JVM_PERFORMANCE_OPTS", f"{PERFORMANCE_OPTS} -XX:TieredStopAtLevel=1")


@contextlib.contextmanager
def new_broker(state: Path) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS, else a new local KRaft broker whose state lives in ``state`` (or
    testcontainers' Kafka when POKESAGA_BROKER=docker, or when the local one cannot run): the
    tests never run on a developer's long-lived broker, and a Docker engine changes nothing."""
    with provisioned(Settings(), state=state) as address:
        asyncio.run(kafka.ensure_topics(address, CAPTURE.all_topics(), 3))
        yield address


@contextlib.contextmanager
def new_cluster(state: Path, brokers: int = 3) -> Iterator[LocalKafka]:
    """A local KRaft cluster of its own, from the Kafka jars (whatever KAFKA_BOOTSTRAP_SERVERS
    says: the tests that use it stop, kill and empty its nodes). Its state is thrown away after,
    so it is SIGKILLed: a clean stop of 3 nodes at once can wait out the whole stop timeout."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the local cluster needs a JDK 17 and Maven (make system-deps)")
    local = LocalKafka(Settings().kafka_cache_dir, state=state, brokers=brokers)
    local.start()
    try:
        yield local
    finally:
        local.discard()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with new_broker(tmp_path_factory.mktemp("broker")) as address:
        yield address


@pytest.fixture(scope="session", autouse=True)
def databases_dropped() -> Iterator[None]:
    """On PostgreSQL, the databases the tests made are dropped at the end."""
    yield
    databases.drop_created()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """A broker, and databases of the test's own (SQLite files, or new PostgreSQL databases)."""
    plain = Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path / "data")
    return databases.with_databases(plain, tmp_path.name)
