"""Failover, on a local 3-node KRaft cluster of the module's own.

While sagas run, one broker is lost with its disk (SIGKILL, data folder emptied, back empty:
formatted anew, it takes its place in the controller quorum again and re-replicates), later
another is SIGKILLed and restarted, and service processes are SIGKILLed and restarted as in the
chaos test. Every saga reaches exactly one outcome, nothing is applied twice, every invariant
of the chaos test holds. Then the whole cluster is stopped and started under the services,
which are not restarted: sagas started afterwards complete.

``POKESAGA_FAILOVER_SAGAS`` (default 500; ``make chaos``: 2000) sizes the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.saga import CAPTURE
from capture.starter import TopicWatcher, publish
from contracts import topics
from engine.broker import kafka
from engine.local.broker import LocalKafka
from tests.conftest import new_cluster
from tests.e2e.conftest import Cluster
from tests.e2e.test_chaos import Disruptor, FollowUp, monkey, run_under, sagas
from tests.support import eventually, in_sync

SAGAS = int(os.environ.get("POKESAGA_FAILOVER_SAGAS", "500"))
ARRIVALS = 90.0  # seconds over which the sagas arrive: the whole drill happens while they run
AFTER = 50  # sagas started once the whole cluster is back
REPLICATED = [*CAPTURE.all_topics(), "__consumer_offsets"]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    with new_cluster(tmp_path_factory.mktemp("cluster")) as local:
        yield local


def broker_drill(local: LocalKafka, bootstrap: str) -> Disruptor:
    """Lose a broker with its disk and bring it back empty; once every replica is in sync
    again, SIGKILL another and restart it; service processes killed meanwhile (monkey)."""

    async def drill(running: Cluster, rng: random.Random, stop: asyncio.Event, figures: Counter[str]) -> None:
        services = asyncio.create_task(monkey(running, rng, stop, figures))
        try:
            lost, killed = rng.sample(range(1, local.brokers + 1), 2)
            await asyncio.sleep(rng.uniform(2, 4))
            figures["outcomes when a broker lost its disk"] = await outcomes_so_far(bootstrap)
            await asyncio.to_thread(local.lose_disk, lost)
            figures["brokers lost with their disk"] += 1
            await asyncio.sleep(rng.uniform(2, 5))
            back = time.monotonic()
            await asyncio.to_thread(local.start)  # formatted anew; takes its voter's place again
            figures["brokers back empty"] += 1
            await eventually(lambda: in_sync(bootstrap, REPLICATED), timeout=180, what="every replica in sync again")
            figures["seconds until re-replicated"] = round(time.monotonic() - back)
            await asyncio.sleep(rng.uniform(1, 3))
            figures["outcomes when another was SIGKILLed"] = await outcomes_so_far(bootstrap)
            await asyncio.to_thread(local.kill_node, killed)
            figures["brokers SIGKILLed"] += 1
            await asyncio.sleep(rng.uniform(2, 5))
            await asyncio.to_thread(local.start)
            figures["brokers restarted"] += 1
        finally:
            await services

    return drill


async def outcomes_so_far(bootstrap: str) -> int:
    """How many outcomes capture.outcomes holds: the drill's moment, in sagas done."""
    return sum((await kafka.end_offsets(bootstrap, [topics.OUTCOMES])).values())


def whole_cluster_restart(local: LocalKafka, bootstrap: str) -> FollowUp:
    """Stop and start every broker under the running services; then new sagas must complete,
    each with one outcome, and no service process was restarted."""

    async def restart(running: Cluster, figures: Counter[str]) -> None:
        pids = {name: process.proc.pid for name, process in running.processes.items() if process.proc}
        await asyncio.to_thread(local.stop)
        figures["whole cluster stopped"] += 1
        await asyncio.to_thread(local.start)
        later = sagas(f"after-{uuid.uuid4().hex[:6]}", random.Random(7), AFTER)
        wanted = {s.sagaid for s in later}
        async with TopicWatcher(bootstrap) as watcher:
            await publish(bootstrap, later)
            await watcher.wait_for(wanted, timeout=240)
            await eventually(lambda: in_sync(bootstrap, REPLICATED), timeout=120, what="the cluster whole again")
            records = await watcher.drain()
        outcomes: dict[str, set[str]] = {}
        for record in records:
            doc = json.loads(record.value)
            if doc["sagaid"] in wanted:
                outcomes.setdefault(doc["sagaid"], set()).add(doc["id"])
        figures["sagas after the restart"] = len(wanted)
        figures["their outcomes"] = sum(len(ids) for ids in outcomes.values())
        assert outcomes.keys() == wanted and figures["their outcomes"] == len(wanted)
        still = {name: process.proc.pid for name, process in running.processes.items() if process.proc}
        assert still == pids and all(process.alive for process in running.processes.values())

    return restart


@pytest.mark.slow
@pytest.mark.no_database  # the brokers are what is lost: run once, in the SQLite pass
def test_losing_brokers_then_the_whole_cluster_loses_nothing_and_duplicates_nothing(
    local_cluster: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = local_cluster.address()
    assert bootstrap is not None
    figures = run_under(
        broker_drill(local_cluster, bootstrap),
        f"failover, {SAGAS} sagas on 3 brokers",
        tmp_path,
        bootstrap,
        seed=12,
        count=SAGAS,
        pace=ARRIVALS / max(1, SAGAS // 25),
        then=whole_cluster_restart(local_cluster, bootstrap),
    )
    assert figures["brokers lost with their disk"] == figures["brokers SIGKILLed"] == 1
    assert figures["kills"] > 0 and figures["whole cluster stopped"] == 1
    assert figures["outcomes when another was SIGKILLed"] < SAGAS  # both brokers fell while sagas ran
