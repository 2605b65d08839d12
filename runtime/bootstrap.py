"""Bootstrap: build participants and their dependencies by name. Nothing opens at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable
from types import ModuleType

from aiokafka.errors import KafkaError
from sqlalchemy import Engine, MetaData

import compensations.combat
import compensations.pokeball
import compensations.status
import services.combat.handlers
import services.delivery.handlers
import services.pokeball.handlers
import services.status.handlers
from contracts import topics
from runtime import health, history, kafka, migrate, tracing
from runtime.db import make_engine, messaging_tables
from runtime.health import Health
from runtime.history import History
from runtime.loop import ParticipantLoop
from runtime.participant import Participant
from runtime.processing import BatchProcessor
from runtime.settings import SERVICES, Settings
from services.combat.tables import CombatRecords
from services.combat.tables import metadata as combat_md
from services.delivery.tables import DeliveryRecords
from services.delivery.tables import metadata as delivery_md
from services.pokeball.tables import PokeballRecords
from services.pokeball.tables import metadata as pokeball_md
from services.status.tables import StatusRecords
from services.status.tables import metadata as status_md

log = logging.getLogger(__name__)

for _md in (status_md, combat_md, pokeball_md, delivery_md):
    messaging_tables(_md)


def _step(service: str, topic: str, handlers: ModuleType, metadata: MetaData, records: type) -> Participant:
    return Participant(service, service, (topic,), handlers.HANDLERS, metadata, records, handlers.give_up)


def _compensator(service: str, handlers: ModuleType, metadata: MetaData, records: type) -> Participant:
    name = f"{service}.compensations"
    return Participant(name, service, (topics.FAILURES,), handlers.HANDLERS, metadata, records)


PARTICIPANTS: dict[str, Participant] = {
    p.name: p
    for p in (
        _step("status", topics.STATUS, services.status.handlers, status_md, StatusRecords),
        _step("combat", topics.COMBAT, services.combat.handlers, combat_md, CombatRecords),
        _step("pokeball", topics.POKEBALL, services.pokeball.handlers, pokeball_md, PokeballRecords),
        _step("delivery", topics.DELIVERY, services.delivery.handlers, delivery_md, DeliveryRecords),
        _compensator("status", compensations.status, status_md, StatusRecords),
        _compensator("combat", compensations.combat, combat_md, CombatRecords),
        _compensator("pokeball", compensations.pokeball, pokeball_md, PokeballRecords),
    )
}
# Each participant's consumer group and the topics it reads.
GROUP_TOPICS = {p.name: list(p.topics) for p in PARTICIPANTS.values()}
METADATA = {"status": status_md, "combat": combat_md, "pokeball": pokeball_md, "delivery": delivery_md}
RUNNABLE = (*SERVICES, *(f"compensations.{s}" for s in SERVICES if f"{s}.compensations" in PARTICIPANTS))


def resolve(target: str) -> list[Participant]:
    """``status`` → the status step and its compensator; ``compensations.status`` → the latter alone."""
    if target.startswith("compensations."):
        name = target.removeprefix("compensations.") + ".compensations"
        if name in PARTICIPANTS:
            return [PARTICIPANTS[name]]
    elif target in SERVICES:
        return [p for p in PARTICIPANTS.values() if p.service == target]
    raise ValueError(f"unknown service {target!r}; expected one of {', '.join(RUNNABLE)}")


def engine_for(service: str, settings: Settings) -> Engine:
    """The service's engine, with its tables created."""
    return open_database(service, settings)[0]


def open_database(service: str, settings: Settings) -> tuple[Engine, bool]:
    """The service's engine, its schema upgraded to the newest revision, and whether the
    database was new (no tables at all: a rebuild, see runtime.history)."""
    engine = make_engine(settings.db_url(service))
    before, after = migrate.upgrade(engine, service, METADATA[service])
    if before != after:
        log.info("%s: database schema upgraded from %s to %s", service, before or "nothing", after)
    return engine, before is None


def build_loop(
    participant: Participant, settings: Settings, engine: Engine, recorded: History | None = None
) -> ParticipantLoop:
    bootstrap = settings.bootstrap
    return ParticipantLoop(
        BatchProcessor(participant, engine, settings, recorded),
        kafka.consumer(bootstrap, participant.name, *participant.topics),
        kafka.producer(bootstrap, linger_ms=settings.linger_ms),
        settings,
    )


async def run_participants(
    participants: Iterable[Participant], settings: Settings, stop: asyncio.Event, checked: Health | None = None
) -> None:
    """Run participants in this process until ``stop`` is set; one engine per service.

    ``checked``: kept up to date with the process's liveness and readiness."""
    participants = list(participants)
    await kafka.ensure_topics(settings.bootstrap, kafka.saga_topics(), settings.partitions)
    engines: dict[str, Engine] = {}
    new: set[str] = set()
    for p in participants:
        if p.service not in engines:
            engines[p.service], is_new = await asyncio.to_thread(open_database, p.service, settings)
            if is_new:
                new.add(p.service)
    rebuilt = await history.load(settings.bootstrap, [p for p in participants if p.service in new])
    loops = [build_loop(p, settings, engines[p.service], rebuilt.get(p.name)) for p in participants]
    tasks = [asyncio.create_task(_run(loop, stop, new, participants, settings), name=loop.name) for loop in loops]
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


async def _run(
    loop: ParticipantLoop, stop: asyncio.Event, new: set[str], participants: list[Participant], settings: Settings
) -> None:
    """Run ``loop``; a compensator rebuilding its database first lets its step catch up.

    In a rebuild the step and its compensator replay the same history independently. A
    compensation replayed before the step it undoes would find nothing to undo, so the
    compensator starts only once its step has committed up to where the topics ended at
    start-up. (The step does not need the compensator: it takes its recorded decisions.)
    """
    participant = loop.processor.participant
    step = next((p for p in participants if p.service == participant.service and not p.compensator), None)
    if participant.compensator and participant.service in new:
        step = step or PARTICIPANTS[participant.service]
        targets = await kafka.end_offsets(settings.bootstrap, step.topics)
        log.info("%s: rebuilding: waiting for %s to replay up to %s", loop.name, step.name, targets)
        while not stop.is_set():
            try:
                committed = await kafka.committed_offsets(settings.bootstrap, step.name, targets)
            except KafkaError as exc:  # e.g. a new broker has no group coordinator yet
                log.info("%s: rebuilding: %s; asking again", loop.name, exc)
                committed = {}
            if all(committed.get(tp, 0) >= end for tp, end in targets.items()):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        if stop.is_set():
            return
    await loop.run(stop)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT: finish the batch in hand, publish, commit, leave the group."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def serve(target: str, settings: Settings) -> None:
    participants = resolve(target)
    tracing.configure(settings, target)
    checked = health.Health(liveness_timeout=settings.liveness_timeout)
    health.serve(settings.metrics_port, settings.metrics_host, checked)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    log.info("running %s against %s", ", ".join(p.name for p in participants), settings.bootstrap)
    await run_participants(participants, settings, stop, checked)
