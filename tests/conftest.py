"""Fixtures shared by every suite: a real Kafka broker, provisioned as the CLI does it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import kafka
from runtime.broker import provisioned
from runtime.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS, else testcontainers (Docker), else the local KRaft broker."""
    with provisioned(Settings()) as address:
        asyncio.run(kafka.ensure_topics(address, kafka.saga_topics(), 3))
        yield address


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path / "data")
