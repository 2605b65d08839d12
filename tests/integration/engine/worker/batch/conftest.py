"""The batch's tests apply batches as the loop hands them over: no broker, the toy's databases only."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.worker.batch.processor import BatchProcessor
from tests import databases
from tests.toy.kit import processor_for
from tests.toy.saga import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Databases of the test's own (SQLite files, or PostgreSQL), no broker."""
    return databases.with_databases(Settings(data_dir=tmp_path), tmp_path.name)


@pytest.fixture
def second(settings: Settings) -> BatchProcessor:
    """The toy's second step, its own handler: ``FirstDone`` in, on ``toy.second``."""
    return processor_for("second", settings)
