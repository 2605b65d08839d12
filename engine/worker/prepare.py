"""Before a service's loops run: its database opened and migrated (``open_database``), and a
rebuild prepared where the database says one is under way or was lost (``prepare_rebuild``), or
begun by ``pokesaga replay`` (``begin_rebuild``) or a restore under the running service
(``begin_restore``). See engine.worker.rebuild for what a rebuild is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace

from aiokafka.errors import KafkaError
from sqlalchemy import Engine

from engine.broker import kafka
from engine.ops import offsets
from engine.participant import Participant
from engine.saga import Saga, Service
from engine.settings import Settings
from engine.store import migrate
from engine.store.db import make_engine, positions_table
from engine.worker import rebuild
from engine.worker.rebuild import Rebuild, RebuildState

log = logging.getLogger(__name__)


def open_database(service: Service, settings: Settings) -> tuple[Engine, bool]:
    """The service's engine, its schema upgraded to the newest revision, and whether the
    database was new (no tables at all: marked for a rebuild, see engine.worker.rebuild)."""
    engine = make_engine(settings.db_url(service.name))
    before, after = migrate.upgrade(engine, service)
    if before != after:
        log.info("%s: database schema upgraded from %s to %s", service.name, before, after)
    return engine, before.empty


def rebuild_state(saga: Saga, service: str, engine: Engine) -> RebuildState:
    """``service``'s rebuild rows, for every participant of the service."""
    return RebuildState(engine, saga.services[service].metadata, [p.name for p in saga.service_of(service)])


async def prepare_rebuild(
    saga: Saga, service: str, engine: Engine, settings: Settings, stop: asyncio.Event, only: Iterable[str]
) -> dict[str, Rebuild]:
    """Those of ``only`` (participants of ``service``) that are rebuilding, by name; a database
    created empty is turned into a rebuild of each participant of the service, and the groups of
    ``only`` are rewound to the earliest records."""
    state, only = rebuild_state(saga, service, engine), list(only)
    # A service's first start: its database new, and every consumer group of the service never used
    # (not only those starting here: a compensator started alone has often read nothing yet).
    groups = [p.name for p in saga.service_of(service)]
    first = await asyncio.to_thread(state.created) and all([await _never_read(settings.bootstrap, g) for g in groups])
    if settings.rebuild_new_databases:
        await asyncio.to_thread(state.expand)
    elif await asyncio.to_thread(state.forget_created):
        if first:
            log.info("%s: first start: a new database, and its consumer groups never read a record", service)
        else:
            log.warning("%s: its database was created empty; not rebuilt from the topics (POKESAGA_REBUILD_NEW_"
                        "DATABASES=false): its consumer groups carry on from where they are", service)  # fmt: skip
    rows = await asyncio.to_thread(state.rows)
    step = saga.participants.get(service)
    found = {}
    for name in only:
        participant = saga.participants[name]
        if name not in rows or not await rebuild.position(settings.bootstrap, state, participant, stop):
            continue
        found[name] = Rebuild(settings.bootstrap, state, participant, step.name if step is not None else None)
    if found and first:
        log.info("%s: first start: a new database, and %s never read a record; reading the topics from the beginning",
                 service, ", ".join(sorted(found)))  # fmt: skip
    elif found:
        log.warning("%s: rebuilding %s from the topics (its database was lost, restored or replayed)",
                    service, ", ".join(sorted(found)))  # fmt: skip
    return found


async def _never_read(bootstrap: str, group: str, patience: float = 30) -> bool:
    """The consumer group has never been used: no member, no committed offset (Kafka calls it Dead;
    so does it a group whose offsets expired, down longer than the brokers' offsets.retention.minutes:
    then the new database is rebuilt from the earliest records all the same, said as a first start).

    On a new broker no group has a coordinator until the offsets topic is made (the first request for
    one makes it) and loaded: an error is asked again, up to ``patience`` seconds; then it is not
    known, and the warning a rebuild gives is the safe thing to say."""
    until = asyncio.get_running_loop().time() + patience
    while True:
        try:
            state, members = await kafka.group_state(bootstrap, group)
        except KafkaError:
            if asyncio.get_running_loop().time() < until:
                await asyncio.sleep(0.5)
                continue
            return False
        return state == "Dead" and members == 0


class RebuildRefused(Exception):
    """A ``pokesaga replay`` that would not rebuild what it claims to; the message says what to do instead."""


async def begin_rebuild(
    saga: Saga, moves: list[offsets.Move], settings: Settings, earliest: bool = False
) -> list[offsets.Move]:
    """Before ``pokesaga replay`` moves their groups: the participants of ``moves`` rebuild their
    state from the records (a database restored from a backup, or lost), re-reading from the moves'
    targets — but never from after the first record their database has not applied (a restored
    backup re-reads what it missed, whatever time was asked for). The moves as they will be made;
    the groups must be stopped. ``RebuildRefused`` for a partial reset of a database created empty."""
    await offsets.check_stopped(settings.bootstrap, [m.group for m in moves])
    made: list[offsets.Move] = []
    for service in dict.fromkeys(saga.participants[m.group].service for m in moves):
        engine, _ = await asyncio.to_thread(open_database, saga.services[service], settings)
        try:
            state = rebuild_state(saga, service, engine)
            if not earliest and await asyncio.to_thread(state.created):
                raise RebuildRefused(
                    f"the database of {service} is new (its state was lost): only --to-earliest can rebuild it"
                )
            starts: dict[str, rebuild.Start | None] = {}
            for name in dict.fromkeys(m.group for m in moves if saga.participants[m.group].service == service):
                mine = await _no_later_than_missed(
                    engine, saga.participants[name], [m for m in moves if m.group == name]
                )
                starts[name] = rebuild.encode({m.partition: m.target for m in mine})
                made += mine
            await asyncio.to_thread(state.begin, starts)
        finally:
            engine.dispose()
    return made


async def begin_restore(saga: Saga, service: str, engine: Engine, settings: Settings) -> None:
    """A database restored under the running service: every participant of the service rebuilds,
    re-reading each partition after the last record the restored database had applied."""
    starts: dict[str, rebuild.Start | None] = {}
    for participant in saga.service_of(service):
        earliest = await offsets.plan_reset(settings.bootstrap, [participant], earliest=True)
        mine = await _no_later_than_missed(engine, participant, earliest)
        starts[participant.name] = rebuild.encode({m.partition: m.target for m in mine})
    await asyncio.to_thread(rebuild_state(saga, service, engine).begin, starts)


async def _no_later_than_missed(
    engine: Engine, participant: Participant, moves: list[offsets.Move]
) -> list[offsets.Move]:
    """``participant``'s ``moves``, none re-reading from after the first record its database missed."""
    after = await asyncio.to_thread(_applied_up_to, engine, participant)
    return [_no_later(m, after) for m in moves]


def _applied_up_to(engine: Engine, participant: Participant) -> rebuild.Start:
    with engine.connect() as conn:
        return rebuild.restore_start(conn, positions_table(participant.metadata), participant.name)


def _no_later(move: offsets.Move, after: rebuild.Start) -> offsets.Move:
    first_missed = after.get(f"{move.partition.topic}:{move.partition.partition}")
    return replace(move, target=first_missed) if first_missed is not None and first_missed < move.target else move
