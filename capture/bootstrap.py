"""The capture saga's composition root: its declaration handed to the engine, by name.

Nothing opens at import: engines, clients and connections are made by the functions below.
"""

from __future__ import annotations

from sqlalchemy import Engine

from capture.saga import CAPTURE
from capture.settings import Settings
from engine.participant import Participant
from engine.worker import prepare, run

PARTICIPANTS: dict[str, Participant] = CAPTURE.participants
GROUP_TOPICS: dict[str, list[str]] = CAPTURE.groups  # each participant's consumer group and the topics it reads
METADATA = {name: service.metadata for name, service in CAPTURE.services.items()}


def resolve(target: str) -> list[Participant]:
    """``status`` → the status step and its compensator; ``compensations.status`` → the latter alone."""
    return CAPTURE.service_of(target)


def open_database(service: str, settings: Settings) -> tuple[Engine, bool]:
    """The service's engine, migrated; and whether its database was new (a rebuild)."""
    return prepare.open_database(CAPTURE.services[service], settings)


def engine_for(service: str, settings: Settings) -> Engine:
    """The service's engine, with its tables created."""
    return open_database(service, settings)[0]


async def serve(target: str, settings: Settings) -> None:
    await run.serve(CAPTURE, target, settings)
