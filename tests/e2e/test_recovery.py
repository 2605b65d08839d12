"""Crash anywhere, replay to recover: nothing lost, nothing done twice.

The services run with a party of 2 and a PC of 2, and every trainer has more captures than
balls and slots, published at once: the outcome of a trainer's saga depends on how the
partitions interleave, which is what a rebuild by replay must reproduce.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from capture.settings import SERVICES
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine import faults
from engine.wire.envelope import Envelope
from tests import databases
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, GROUPS, Cluster, cluster, pokesaga
from tests.support import caught_up, eventually, holds


@pytest.fixture(scope="module")
def recovery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A broker of its own: a rebuild replays everything on the topics, and what the other
    suites left there would make its size depend on the order the suites ran in."""
    env = {"POKESAGA_PARTY_SIZE": "2", "POKESAGA_PC_CAPACITY": "2"}
    data = tmp_path_factory.mktemp("recovery")
    with new_broker(data / "broker") as bootstrap, cluster(bootstrap, data, **env) as running:
        running.started_at = datetime.now(UTC)  # type: ignore[attr-defined]
        yield running


def workload(run: str, trainers: int = 4, per_trainer: int = 8) -> tuple[list[Envelope], list[str]]:
    names = [f"W{t}-{run}" for t in range(trainers)]
    sagas = []
    for i in range(per_trainer):
        for name in names:
            pokemon = {"name": "Caterpie", **CERTAIN} if i % 4 else {"name": "Snorlax", "level": 40}
            sagas.append(start_event(f"{name}-{i}", {"name": name}, pokemon))
    return sagas, names


async def run_to_the_end(running: Cluster, sagas: list[Envelope]) -> dict[str, set[str]]:
    """Publish, wait for every outcome and every group to catch up; outcome event ids per saga."""
    async with TopicWatcher(running.settings.bootstrap, topics.OUTCOMES) as outcomes:
        await publish(running.settings.bootstrap, sagas)
        wanted = {s.sagaid for s in sagas}

        async def done() -> bool:
            await outcomes.poll()
            return wanted <= outcomes.outcomes.keys()

        await eventually(done, timeout=120, what="every outcome")
        await eventually(lambda: caught_up(running.settings.bootstrap, GROUPS), timeout=60, what="caught up")
        return outcome_ids(await outcomes.drain(), wanted)


def outcome_ids(records: list[Any], sagas: set[str]) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {}
    for record in records:
        doc = json.loads(record.value)
        if doc["sagaid"] in sagas:
            ids.setdefault(doc["sagaid"], set()).add(doc["id"])
    return ids


def inspect_texts(running: Cluster, trainers: list[str]) -> dict[str, str]:
    return {t: pokesaga(running.settings, "inspect", "trainer", t, "--json").stdout for t in trainers}


@pytest.mark.parametrize("point", faults.POINTS)
async def test_a_service_killed_at_a_crash_point_recovers_with_no_duplicate_effect(
    recovery: Cluster, point: str
) -> None:
    recovery.stop("pokeball")
    crashing = recovery.start("pokeball", POKESAGA_CRASH_AT=point)
    trainer, saga = f"Crash-{uuid.uuid4().hex[:6]}", f"crash-{point}-{uuid.uuid4()}"
    async with TopicWatcher(recovery.settings.bootstrap, topics.OUTCOMES) as outcomes:
        await publish(
            recovery.settings.bootstrap, [start_event(saga, {"name": trainer}, {"name": "Pidgey", **CERTAIN})]
        )

        async def crashed() -> bool:
            return not crashing.alive

        await eventually(crashed, timeout=60, what=f"the crash at {point}")
        assert crashing.proc is not None and crashing.proc.returncode == 137
        recovery.start("pokeball")
        await outcomes.wait_for([saga], timeout=60)
        await eventually(lambda: caught_up(recovery.settings.bootstrap, GROUPS), timeout=60, what="caught up")
        await outcomes.drain()
    assert [o.type for o in outcomes.outcomes[saga]] == ["PokemonDelivered"]
    view = pokesaga(recovery.settings, "inspect", "trainer", trainer, "--json").stdout
    assert '"balls": 4' in view  # one throw, one ball, however often the record was seen
    one_saga = {"s": saga}
    assert databases.rows(
        recovery.settings, "pokeball", "select count(*) from throws where saga_id = :s", **one_saga
    ) == [(1,)]
    outbox = functools.partial(databases.rows, recovery.settings, "pokeball", "select count(*) from outbox")
    await eventually(lambda: holds(outbox, [(0,)]), timeout=10, what="pokeball's outbox emptied (idle)")
    assert databases.rows(
        recovery.settings, "delivery", "select count(*) from deliveries where saga_id = :s", **one_saga
    ) == [(1,)]


def test_replay_is_refused_while_the_service_runs(recovery: Cluster) -> None:
    refused = pokesaga(recovery.settings, "replay", "combat", "--to-earliest")
    assert refused.returncode == 1
    assert "live member" in refused.stderr and "stop the service first" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(  # on PostgreSQL, status and pokeball: the replay writes every service's tables the same way
    "service", ["status", pytest.param("combat", marks=pytest.mark.sqlite_only), "pokeball",
                pytest.param("delivery", marks=pytest.mark.sqlite_only)]
)  # fmt: skip
async def test_a_lost_database_is_rebuilt_by_replay_to_the_same_state(recovery: Cluster, service: str) -> None:
    sagas, trainers = workload(uuid.uuid4().hex[:6])
    wanted = {s.sagaid for s in sagas}
    first = await run_to_the_end(recovery, sagas)
    assert {k: len(v) for k, v in first.items() if len(v) != 1} == {} and first.keys() == wanted
    before = inspect_texts(recovery, trainers)

    recovery.stop(service)
    databases.lose(recovery.settings, service)
    replayed = pokesaga(recovery.settings, "replay", service, "--to-earliest")
    assert replayed.returncode == 0, replayed.stderr
    async with TopicWatcher(recovery.settings.bootstrap, topics.OUTCOMES) as outcomes:
        recovery.start(service)
        await recovery.joined()
        await eventually(lambda: caught_up(recovery.settings.bootstrap, GROUPS), timeout=120, what="rebuilt")
        republished = outcome_ids(await outcomes.drain(), wanted)

    assert inspect_texts(recovery, trainers) == before  # byte for byte
    # What the rebuild re-published carries the ids it had: no saga got a second, different outcome.
    assert {k: v - first[k] for k, v in republished.items() if v - first[k]} == {}


async def test_replay_over_a_healthy_database_changes_nothing_anywhere(recovery: Cluster) -> None:
    sagas, trainers = workload(uuid.uuid4().hex[:6], trainers=3, per_trainer=6)
    await run_to_the_end(recovery, sagas)
    before, rows = inspect_texts(recovery, trainers), databases.dump(recovery.settings)
    since = recovery.started_at.isoformat()  # type: ignore[attr-defined]
    everywhere = [*topics.ALL, *(topics.dead_letters(t) for t in topics.ALL if t != topics.OUTCOMES)]
    for name in list(recovery.processes):
        recovery.stop(name)
    for service in SERVICES:
        replayed = pokesaga(recovery.settings, "replay", service, "--to-datetime", since)
        assert replayed.returncode == 0, replayed.stderr
        assert "moved" in replayed.stdout
    watchers = [TopicWatcher(recovery.settings.bootstrap, t) for t in everywhere]
    for watcher in watchers:
        await watcher.__aenter__()
    try:
        for service in SERVICES:
            recovery.start(service)
        await recovery.joined()
        await eventually(lambda: caught_up(recovery.settings.bootstrap, GROUPS), timeout=120, what="reprocessed")
        published = {w.topic: len(await w.drain()) for w in watchers}
    finally:
        for watcher in watchers:
            await watcher.__aexit__(None, None, None)
    assert published == dict.fromkeys(everywhere, 0)
    assert inspect_texts(recovery, trainers) == before
    assert databases.dump(recovery.settings) == rows
