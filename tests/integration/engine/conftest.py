"""The engine's integration tests run the toy saga (tests/toy): two steps, one compensation,
no Pokémon. ``settings`` here is the toy's: a broker, and databases of the test's own."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.broker import kafka
from engine.participant import Participant
from engine.wire.deadletter import dead_letters
from tests import databases
from tests.toy.saga import TOY, Settings


@pytest.fixture(scope="session")
def toy_topics(kafka_bootstrap: str) -> str:
    asyncio.run(kafka.ensure_topics(kafka_bootstrap, TOY.all_topics(), 3))
    return kafka_bootstrap


@pytest.fixture
def settings(toy_topics: str, tmp_path: Path) -> Settings:
    plain = Settings(kafka_bootstrap_servers=toy_topics, data_dir=tmp_path / "data")
    return databases.with_databases(plain, tmp_path.name)


@pytest.fixture
def participant() -> Participant:
    """The first step, under a consumer group and an input topic of the test's own."""
    uid = uuid.uuid4().hex[:8]
    return dataclasses.replace(TOY.participants["first"], name=f"first-it-{uid}", topics=(f"it.{uid}.first",))


@pytest.fixture
async def topic(participant: Participant, settings: Settings) -> AsyncIterator[str]:
    (name,) = participant.topics
    await kafka.ensure_topics(settings.bootstrap, [name, dead_letters(name)], settings.partitions)
    yield name
