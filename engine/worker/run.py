"""Run a saga's participants in this process: databases opened and migrated, a rebuild carried
on where a database says one is under way (engine.worker.rebuild), one loop per participant, health
kept up to date.

``serve(saga, "status", settings)`` is what ``pokesaga run status`` does. Nothing opens at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from engine.broker import kafka, replication, security
from engine.broker.producing import RenewingProducer
from engine.observe import health, tracing
from engine.observe.health import Health
from engine.participant import Participant
from engine.saga import Saga
from engine.settings import Settings
from engine.store import migrate
from engine.wire.text import printable
from engine.worker import rebuild
from engine.worker.batch.errors import RebuildRequired
from engine.worker.batch.processor import BatchProcessor
from engine.worker.loop import ParticipantLoop
from engine.worker.prepare import begin_restore, open_database, prepare_rebuild, rebuild_state
from engine.worker.rebuild import History, Rebuild

log = logging.getLogger(__name__)


def build_loop(
    saga: Saga,
    participant: Participant,
    settings: Settings,
    engine: Engine,
    recorded: History | None = None,
    rebuilding: Rebuild | None = None,
    watched: bool = False,
) -> ParticipantLoop:
    """``recorded``: the participant is rebuilding, and this is its history; ``rebuilding`` follows
    the rebuild's progress in the database (without it, the rebuild ends after the first batch).
    ``watched``: the loop raises ``RebuildRequired`` when its database is lost or replaced under it
    (``run_participants`` then starts the participant's rebuild)."""
    bootstrap = settings.bootstrap
    processor = BatchProcessor(participant, saga.types, engine, settings, recorded)
    processor.guard.watched = watched
    return ParticipantLoop(
        processor,
        kafka.consumer(bootstrap, participant.name, *participant.topics, **settings.group_membership()),
        RenewingProducer(participant.name, lambda: kafka.producer(bootstrap, linger_ms=settings.linger_ms)),
        settings,
        rebuilding,
    )


async def run_participants(
    saga: Saga,
    participants: Iterable[Participant],
    settings: Settings,
    stop: asyncio.Event,
    checked: Health | None = None,
) -> None:
    """Run participants in this process until ``stop`` is set; one engine per service.

    ``checked``: kept up to date with the process's liveness and readiness (from the start: a
    rebuild's preparation may take a while)."""
    participants = list(participants)
    await replication.ensure_replicated(settings, saga.all_topics())
    engines: dict[str, Engine] = {}
    loops: list[ParticipantLoop] = []
    tasks = []
    if checked is not None:
        assignments = health.assigned(loops)
        checks = health.check_forever(checked, settings.bootstrap, engines, assignments, settings.health_interval, stop)
        tasks.append(asyncio.create_task(checks, name="health"))
    try:
        rebuilds: dict[str, Rebuild] = {}
        for p in participants:
            if p.service not in engines:
                engines[p.service], _ = await asyncio.to_thread(open_database, saga.services[p.service], settings)
                mine = [q.name for q in participants if q.service == p.service]
                rebuilds |= await prepare_rebuild(saga, p.service, engines[p.service], settings, stop, mine)
        rebuilding = [p for p in participants if p.name in rebuilds]
        read_back = saga.published_topics(p.name for p in rebuilding)
        recorded = await rebuild.load(settings.bootstrap, rebuilding, read_back, saga.types)
        loops += [
            build_loop(saga, p, settings, engines[p.service], recorded.get(p.name), rebuilds.get(p.name), watched=True)
            for p in participants
        ]
        del recorded  # each loop holds its own, and lets it go when its rebuild is over
        tasks += [asyncio.create_task(_run(saga, loops, i, stop, settings), name=lp.name) for i, lp in enumerate(loops)]
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


async def _run(saga: Saga, loops: list[ParticipantLoop], i: int, stop: asyncio.Event, settings: Settings) -> None:
    """Run ``loops[i]``; a rebuilding compensator first lets its step re-apply its history. A
    database lost or replaced while it runs makes it leave its group and start its rebuild."""
    while True:
        loop = loops[i]
        if loop.rebuild is not None and not await loop.rebuild.wait_for_step(stop):
            return
        try:
            await loop.run(stop)
            return
        except RebuildRequired as lost:
            log.warning("%s; starting its rebuild", lost)
        loops[i] = await _rebuilding(saga, loop, settings, stop)
        if stop.is_set():
            return


async def _rebuilding(saga: Saga, loop: ParticipantLoop, settings: Settings, stop: asyncio.Event) -> ParticipantLoop:
    """``loop``'s participant anew, after its database was lost: schema, rebuild rows, history."""
    participant, engine = loop.processor.participant, loop.processor.engine
    loop.processor.history.close()  # the history of a rebuild that will not go on
    service = saga.services[participant.service]
    engine.dispose()  # connections to a database that is gone (SQLite: to a deleted file)
    while not stop.is_set():
        try:
            await asyncio.to_thread(migrate.upgrade, engine, service)
            state = rebuild_state(saga, participant.service, engine)
            await asyncio.to_thread(state.expand)
            if participant.name not in await asyncio.to_thread(state.rows):
                log.warning("%s: its database was replaced by one restored from a backup: rebuilding what it "
                            "missed", participant.name)  # fmt: skip
                await begin_restore(saga, participant.service, engine, settings)
            rebuilds = await prepare_rebuild(saga, participant.service, engine, settings, stop, [participant.name])
            break
        except DBAPIError as exc:  # still away: try again
            log.warning("%s: database not back yet: %s", participant.name, printable(str(exc), 300))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
    else:
        return loop
    found = rebuilds.get(participant.name)
    history = None
    if found is not None:
        read_back = saga.published_topics([participant.name])
        history = (await rebuild.load(settings.bootstrap, [participant], read_back, saga.types))[participant.name]
    return build_loop(saga, participant, settings, engine, history, found, watched=True)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT: finish the batch in hand, publish, commit, leave the group."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def serve(saga: Saga, target: str, settings: Settings) -> None:
    """Run ``target`` (a service with its compensator, or ``compensations.SERVICE``) until SIGTERM."""
    participants = saga.service_of(target)
    security.secure(settings)  # whatever started it: every client of the saga's brokers
    tracing.configure(settings, target)
    checked = health.Health(liveness_timeout=settings.liveness_timeout)
    health.serve_http(settings.metrics_port, settings.metrics_host, checked)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    log.info("running %s against %s", ", ".join(p.name for p in participants), settings.bootstrap)
    await run_participants(saga, participants, settings, stop, checked)
