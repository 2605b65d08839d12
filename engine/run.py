"""Run a saga's participants in this process: databases opened and migrated, a rebuild's
history loaded when a database is new, one loop per participant, health kept up to date.

``serve(saga, "status", settings)`` is what ``pokesaga run status`` does. Nothing opens at import.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable

from sqlalchemy import Engine

from engine import health, kafka, migrate, rebuild, replication, tracing
from engine.db import make_engine
from engine.health import Health
from engine.loop import ParticipantLoop
from engine.participant import Participant
from engine.processing import BatchProcessor
from engine.rebuild import History
from engine.saga import Saga, Service
from engine.settings import Settings

log = logging.getLogger(__name__)


def open_database(service: Service, settings: Settings) -> tuple[Engine, bool]:
    """The service's engine, its schema upgraded to the newest revision, and whether the
    database was new (no tables at all: a rebuild, see engine.rebuild)."""
    engine = make_engine(settings.db_url(service.name))
    before, after = migrate.upgrade(engine, service)
    if before != after:
        log.info("%s: database schema upgraded from %s to %s", service.name, before or "nothing", after)
    return engine, before is None


def build_loop(
    saga: Saga, participant: Participant, settings: Settings, engine: Engine, recorded: History | None = None
) -> ParticipantLoop:
    bootstrap = settings.bootstrap
    return ParticipantLoop(
        BatchProcessor(participant, saga.types, engine, settings, recorded),
        kafka.consumer(bootstrap, participant.name, *participant.topics, **settings.group_membership()),
        kafka.producer(bootstrap, linger_ms=settings.linger_ms),
        settings,
    )


async def run_participants(
    saga: Saga,
    participants: Iterable[Participant],
    settings: Settings,
    stop: asyncio.Event,
    checked: Health | None = None,
) -> None:
    """Run participants in this process until ``stop`` is set; one engine per service.

    ``checked``: kept up to date with the process's liveness and readiness."""
    participants = list(participants)
    await replication.ensure_replicated(settings, saga.all_topics())
    engines: dict[str, Engine] = {}
    new: set[str] = set()
    for p in participants:
        if p.service not in engines:
            engines[p.service], is_new = await asyncio.to_thread(open_database, saga.services[p.service], settings)
            if is_new:
                new.add(p.service)
    rebuilding = [p for p in participants if p.service in new]
    recorded = await rebuild.load(settings.bootstrap, rebuilding, saga.topics)
    loops = [build_loop(saga, p, settings, engines[p.service], recorded.get(p.name)) for p in participants]
    tasks = [asyncio.create_task(_run(saga, loop, stop, new, settings), name=loop.name) for loop in loops]
    if checked is not None:
        assignments = health.assigned((loop.name, loop.consumer) for loop in loops)
        checks = health.check_forever(checked, settings.bootstrap, engines, assignments, settings.health_interval, stop)
        tasks.append(asyncio.create_task(checks, name="health"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in engines.values():
            engine.dispose()


async def _run(saga: Saga, loop: ParticipantLoop, stop: asyncio.Event, new: set[str], settings: Settings) -> None:
    """Run ``loop``; a compensator whose database is being rebuilt first lets its step catch up."""
    participant = loop.processor.participant
    step = saga.participants.get(participant.service)  # a service may have a compensator and no step
    if participant.compensator and participant.service in new and step is not None:
        caught_up = await rebuild.step_caught_up(settings.bootstrap, loop.name, step, stop)
        if not caught_up:
            return
    await loop.run(stop)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT: finish the batch in hand, publish, commit, leave the group."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def serve(saga: Saga, target: str, settings: Settings) -> None:
    """Run ``target`` (a service with its compensator, or ``compensations.SERVICE``) until SIGTERM."""
    participants = saga.service_of(target)
    tracing.configure(settings, target)
    checked = health.Health(liveness_timeout=settings.liveness_timeout)
    health.serve(settings.metrics_port, settings.metrics_host, checked)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    log.info("running %s against %s", ", ".join(p.name for p in participants), settings.bootstrap)
    await run_participants(saga, participants, settings, stop, checked)
