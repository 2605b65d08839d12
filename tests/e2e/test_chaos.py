"""Chaos: SIGKILL random service processes during a run, restart them, check every invariant.

Two instances of pokeball and of delivery share their service's database and consumer group.
``POKESAGA_CHAOS_ROUNDS`` (default 3) runs it that many times in a row, each on fresh databases.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine.local.broker import free_port
from engine.wire.envelope import Envelope
from tests.databases import rows
from tests.e2e.conftest import GROUPS, Cluster, cluster
from tests.e2e.test_identities import remake_topics
from tests.support import caught_up, eventually, metric_samples, total

ROUNDS = int(os.environ.get("POKESAGA_CHAOS_ROUNDS", "3"))
SAGAS = int(os.environ.get("POKESAGA_CHAOS_SAGAS", "500"))
INSTANCES = ("status", "combat", "pokeball", "pokeball#2", "delivery", "delivery#2")
STARTER_BALLS, PARTY, PC = 5, 3, 5


def sagas(run: str, rng: random.Random, count: int = SAGAS) -> list[Envelope]:
    """A mix of every path over 40 trainers, so bags and parties are contended."""
    mixed = []
    for i in range(count):
        trainer = {"name": f"K{i % 40}-{run}"}
        roll = rng.random()
        if roll < 0.5:
            pokemon: dict[str, Any] = {"name": "Caterpie", "catch_rate": 255, "level": 20, "hp": 10}
        elif roll < 0.7:
            pokemon = {"name": rng.choice(["Snorlax", "Lapras", "Mewtwo", "Onix"]), "level": rng.randint(20, 70)}
        elif roll < 0.85:
            pokemon = {"name": rng.choice(["Pikachu", "Voltorb", "Jolteon"])}
        else:
            pokemon = {"name": "Rattata", "hp": 1}
        mixed.append(start_event(f"chaos-{run}-{i}", trainer, pokemon))
    return mixed


Figures = Counter[str]
Disruptor = Callable[[Cluster, random.Random, asyncio.Event, Counter[str]], Awaitable[None]]
FollowUp = Callable[[Cluster, Counter[str]], Awaitable[None]]  # run while the services still run


async def monkey(running: Cluster, rng: random.Random, stop: asyncio.Event, figures: Counter[str]) -> None:
    """Kill a random service process now and then, and bring it back a little later."""
    deadline = time.monotonic() + 45  # bounded: stops by itself
    while not stop.is_set() and time.monotonic() < deadline and figures["kills"] < 15:
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        name = rng.choice(INSTANCES)
        running.kill(name)
        figures["kills"] += 1
        await asyncio.sleep(rng.uniform(0.1, 1.0))
        running.start(name)
        figures["restarts"] += 1


async def rolling_restart(running: Cluster, rng: random.Random, stop: asyncio.Event, figures: Counter[str]) -> None:
    """Restart every instance in turn with SIGTERM, as a deployment does."""
    for name in INSTANCES:
        code = await asyncio.to_thread(running.stop, name)
        figures["clean stops"] += code == 0
        if code != 0:
            log = running.processes[name].log_path.read_text(errors="replace").splitlines()
            print(f"\n{name} exited {code} on SIGTERM; its log ends:\n" + "\n".join(log[-40:]))
        running.start(name)
        figures["restarts"] += 1
        await running.joined()


def outboxes_empty(settings: Settings) -> bool:
    return all(not rows(settings, service, "select count(*) from outbox")[0][0] for service in CAPTURE.services)


def check_invariants(settings: Settings, outcomes: dict[str, dict[str, str]], wanted: set[str]) -> dict[str, int]:
    """The invariants of the issue; returns the figures that must be zero."""
    broken: Counter[str] = Counter()
    # No Pokémon in two places, and only where its saga says it was delivered.
    placed = rows(
        settings, "delivery", "select saga_id, trainer, location, slot from deliveries where location is not null"
    )
    broken["pokemon in two places"] = len(placed) - len({(t, loc, s) for _, t, loc, s in placed})
    for saga, _trainer, _location, _slot in placed:
        if saga in wanted and next(iter(outcomes.get(saga, {}).values()), "") != "PokemonDelivered":
            broken["delivered without PokemonDelivered"] += 1
    for (_trainer, location), n in Counter((t, loc) for _, t, loc, _ in placed).items():
        broken["storage overflow"] += n > (PARTY if location == "party" else PC)
    # Balls used equal throws recorded (a refund undoes one throw, at most once).
    thrown = dict(
        rows(
            settings,
            "pokeball",
            "select trainer, count(*) from throws where ball is not null and not refunded group by trainer",
        )
    )
    for trainer, balls in rows(settings, "pokeball", "select trainer, balls from bags"):
        broken["balls used != throws recorded"] += STARTER_BALLS - balls != thrown.get(trainer, 0)
    # Every compensation ran at most once in effect: healed back exactly, restored exactly.
    broken["hp not restored exactly"] = len(
        rows(settings, "combat", "select 1 from attacks where healed and hp != hp_before")
    )
    broken["status not restored exactly"] = len(
        rows(settings, "status", "select 1 from statuses where outcome = 'restored' and status != previous_status")
    )
    # Nothing stuck in an outbox, nothing left parked.
    for service in ("status", "combat", "pokeball", "delivery"):
        broken["records stuck in an outbox"] += rows(settings, service, "select count(*) from outbox")[0][0]
        broken["records left parked"] += rows(settings, service, "select count(*) from parked")[0][0]
    return dict(broken)


async def drive(
    running: Cluster,
    mixed: list[Envelope],
    rng: random.Random,
    figures: Counter[str],
    disrupt: Disruptor,
    pace: float = 0.5,
    halfway: FollowUp | None = None,
) -> list[Any]:
    """Publish in waves while ``disrupt`` runs; every record on capture.outcomes once all are done.
    ``halfway``: once the first half has its outcomes, run it, then publish the second half."""
    bootstrap = running.settings.bootstrap
    halves = [mixed] if halfway is None else [mixed[: len(mixed) // 2], mixed[len(mixed) // 2 :]]
    stop = asyncio.Event()
    chaos = asyncio.create_task(disrupt(running, rng, stop, figures))
    records: list[Any] = []
    try:
        for n, half in enumerate(halves):
            if n and halfway is not None:
                await halfway(running, figures)
            records += await outcomes_of(bootstrap, half, pace)
    finally:
        stop.set()
        await chaos
    await running.joined()
    await eventually(lambda: caught_up(bootstrap, GROUPS), timeout=120, what="every group caught up")
    return records


async def outcomes_of(bootstrap: str, mixed: list[Envelope], pace: float) -> list[Any]:
    """Publish ``mixed`` in waves of 25; every record on capture.outcomes once each has its outcome."""
    wanted = {s.sagaid for s in mixed}
    async with TopicWatcher(bootstrap, topics.OUTCOMES) as watcher:
        for wave in range(0, len(mixed), 25):  # about ten seconds of arrivals, overlapping the disruption
            await publish(bootstrap, mixed[wave : wave + 25])
            await asyncio.sleep(pace)

        async def all_outcomes() -> bool:
            await watcher.poll()
            return wanted <= watcher.outcomes.keys()

        await eventually(all_outcomes, timeout=300, what="an outcome for every saga")
        return await watcher.drain()


async def steady(running: Cluster, rng: random.Random, stop: asyncio.Event, figures: Counter[str]) -> None:
    """No disruption: once every saga has its outcome, count what each instance applied."""
    await stop.wait()
    for name, process in running.processes.items():
        applied = metric_samples(int(process.extra_env["POKESAGA_METRICS_PORT"]))  # by the step, not its compensator
        figures[f"applied by {name}"] = int(
            total([applied], "pokesaga_events_consumed_total", participant=process.target)
        )
    figures["throws recorded"] = rows(running.settings, "pokeball", "select count(*) from throws")[0][0]
    figures["deliveries recorded"] = rows(running.settings, "delivery", "select count(*) from deliveries")[0][0]


def run_under(
    disrupt: Disruptor,
    label: str,
    data: Path,
    bootstrap: str,
    seed: int,
    count: int = SAGAS,
    pace: float = 0.5,
    then: FollowUp | None = None,
    extra_env: dict[str, str] | None = None,
    halfway: FollowUp | None = None,
) -> Counter[str]:
    """Run ``count`` sagas of the mix, a wave of 25 every ``pace`` seconds, while ``disrupt``
    runs (and ``halfway``, between the halves); then ``then``, before the services stop; check
    the invariants; return the figures."""
    run, rng = uuid.uuid4().hex[:6], random.Random(seed)
    mixed = sagas(run, rng, count)
    wanted = {s.sagaid for s in mixed}
    env = {
        "POKESAGA_STARTER_BALLS": str(STARTER_BALLS),
        "POKESAGA_PARTY_SIZE": str(PARTY),
        "POKESAGA_PC_CAPACITY": str(PC),
        **(extra_env or {}),
    }
    figures: Counter[str] = Counter()
    started = time.monotonic()
    ports = {name: {"POKESAGA_METRICS_PORT": str(free_port())} for name in INSTANCES}
    with cluster(bootstrap, data, INSTANCES, per_instance=ports, **env) as running:
        settings = running.settings
        records = asyncio.run(drive(running, mixed, rng, figures, disrupt, pace, halfway))
        # What a killed instance published but had not deleted is published again by a running one
        # once older than the grace period (engine.worker.flusher): no row waits for a restart.
        asyncio.run(eventually(lambda: asyncio.to_thread(outboxes_empty, settings), timeout=60,
                               what="every outbox empty"))  # fmt: skip
        if then is not None:
            asyncio.run(then(running, figures))

    outcomes: dict[str, dict[str, str]] = {}  # saga → outcome event id → type
    copies = 0
    for record in records:
        doc = json.loads(record.value)
        if doc["sagaid"] in wanted:
            copies += 1
            outcomes.setdefault(doc["sagaid"], {})[doc["id"]] = doc["type"]
    figures["sagas"] = len(wanted)
    figures["outcomes"] = sum(len(ids) for ids in outcomes.values())
    figures["re-published copies"] = copies - figures["outcomes"]
    figures["duplicates"] = sum(len(ids) - 1 for ids in outcomes.values())
    figures["lost"] = len(wanted - outcomes.keys())
    for types in outcomes.values():
        figures[next(iter(types.values()))] += 1
    broken = check_invariants(settings, outcomes, wanted)
    print(f"\n{label}: {dict(figures)} in {time.monotonic() - started:.0f}s; broken: {broken}")
    assert figures["duplicates"] == 0 and figures["lost"] == 0
    assert {k: v for k, v in broken.items() if v} == {}
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(1, ROUNDS + 1))
def test_sigkill_anywhere_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path, round_: int
) -> None:
    figures = run_under(monkey, f"chaos round {round_}", tmp_path, kafka_bootstrap, seed=round_)
    assert figures["kills"] > 0


@pytest.mark.slow
def test_sigkill_while_records_wait_to_be_retried_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Every participant fails a third of its tries (transient, injected), so records are parked to
    be retried all the time, by two instances of pokeball and of delivery sharing them, while
    processes are SIGKILLed and restarted: every saga ends once, no effect is applied twice."""

    async def retried_and_chaos(running: Cluster, rng: random.Random, stop: asyncio.Event, figures: Figures) -> None:
        async with TopicWatcher(running.settings.bootstrap, CAPTURE.retries_topic) as notices:
            await monkey(running, rng, stop, figures)
            await stop.wait()
            mine = [r for r in await notices.drain() if json.loads(r.value)["sagaid"].startswith("chaos-")]
            figures["retry notices"] = len(mine)

    faults = {"POKESAGA_FAULTS": "0.3", "POKESAGA_RETRY": json.dumps({"maximum_attempts": 8, "maximum_interval": 0.5})}
    figures = run_under(
        retried_and_chaos, "chaos with retries", tmp_path, kafka_bootstrap, seed=7, count=SAGAS // 2, extra_env=faults
    )
    assert figures["kills"] > 0 and figures["retry notices"] > 0


@pytest.mark.slow
@pytest.mark.sqlite_only  # positions void on PostgreSQL: test_identities, topics made again under running services
def test_saga_topics_deleted_and_made_again_halfway_lose_nothing_started_after(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Halfway, every topic of the saga is deleted and made again (a purge, a cluster rebuilt from
    nothing) while the services keep their databases and processes are SIGKILLed: the offsets start
    over, the positions the services recorded are void, and every saga reaches exactly one outcome."""

    async def remake(running: Cluster, figures: Figures) -> None:
        await remake_topics(running.settings.bootstrap, CAPTURE.all_topics())
        figures["topics made again"] += 1

    figures = run_under(monkey, "topics made again halfway", tmp_path, kafka_bootstrap, seed=11, halfway=remake)
    assert figures["topics made again"] == 1 and figures["kills"] > 0


@pytest.mark.sqlite_only  # on PostgreSQL, the harsher stop: test_sigkill_anywhere_loses_nothing_and_duplicates_nothing
def test_a_rolling_restart_of_every_service_loses_and_duplicates_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    figures = run_under(rolling_restart, "rolling restart", tmp_path, kafka_bootstrap, seed=0)
    assert figures["clean stops"] == len(INSTANCES)


def test_two_instances_of_a_service_share_one_database_and_apply_each_record_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Both instances of pokeball and of delivery do part of the work, against one database
    (one PostgreSQL database in the PostgreSQL pass), and every invariant holds."""
    figures = run_under(steady, "two instances per service", tmp_path, kafka_bootstrap, seed=1)
    for name in ("pokeball", "pokeball#2", "delivery", "delivery#2"):
        assert figures[f"applied by {name}"] > 0, (name, dict(figures))
    # Each record applied once, by one of the two: one row per saga that reached the step.
    assert figures["applied by pokeball"] + figures["applied by pokeball#2"] == figures["throws recorded"]
    assert figures["applied by delivery"] + figures["applied by delivery#2"] == figures["deliveries recorded"]
    assert figures["deliveries recorded"] > 0
