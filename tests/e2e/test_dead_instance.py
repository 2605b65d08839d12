"""An instance dies with its outbox: two instances of combat share its database and its
consumer group; one dies right after a local commit, before publishing, and is never restarted.
The survivor publishes what it left behind, and its ``outbox_backlog`` shows those rows meanwhile.

A broker of its own: records other suites left unconsumed on capture.combat would reach the
dying instance before this test's sagas do.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from capture.settings import SERVICES
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine import faults
from engine.broker import kafka
from engine.local.broker import free_port
from tests import databases
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, GROUPS, Cluster, cluster
from tests.support import Samples, caught_up, eventually, holds, http_get, metric_samples

BACKLOG = ("pokesaga_outbox_backlog", (("participant", "combat"),))


def scraped(port: int) -> Samples:
    return metric_samples(port) if http_get(port, "/metrics")[0] == 200 else Counter()


@pytest.mark.sqlite_only  # on PostgreSQL: test_flusher, outbox rows a dead instance left are published by a running one
def test_the_outbox_rows_of_an_instance_that_died_after_its_local_commit_are_published_by_the_survivor(
    tmp_path: Path,
) -> None:
    port, run = free_port(), uuid.uuid4().hex[:6]
    per_instance = {
        "combat": {"POKESAGA_METRICS_PORT": str(port)},
        "combat#2": {"POKESAGA_CRASH_AT": faults.AFTER_LOCAL_COMMIT},
    }
    with (
        new_broker(tmp_path / "broker") as bootstrap,
        cluster(bootstrap, tmp_path, (*SERVICES, "combat#2"), per_instance) as running,
    ):
        published, records, backlog = asyncio.run(one_dies(running, port, run))
        for service in SERVICES:  # what each published is deleted by its next transaction, or once idle
            outbox = functools.partial(databases.rows, running.settings, service, "select count(*) from outbox")
            asyncio.run(eventually(lambda o=outbox: holds(o, [(0,)]), timeout=10, what=f"{service}'s outbox emptied"))

    assert max(backlog) == 1  # the row no live instance held, counted by the survivor before it went out
    outcome_ids: dict[str, set[str]] = {}
    for record in records:
        doc = json.loads(record.value)
        if doc["sagaid"] in published:
            assert doc["type"] == "PokemonDelivered", doc
            outcome_ids.setdefault(doc["sagaid"], set()).add(doc["id"])
    assert {saga: len(ids) for saga, ids in outcome_ids.items()} == dict.fromkeys(published, 1)


async def one_dies(running: Cluster, port: int, run: str) -> tuple[list[str], list[Any], list[float]]:
    """Sagas until the second instance dies with one in its outbox, then ten more; every saga
    published, every record on capture.outcomes, and the survivor's backlog while the stranded
    saga waited."""
    bootstrap, dying = running.settings.bootstrap, running.processes["combat#2"]

    async def both_consuming() -> bool:
        try:
            return await kafka.group_state(bootstrap, "combat") == ("Stable", 2)
        except KafkaError:  # the coordinator not ready yet
            return False

    await eventually(both_consuming, timeout=60, what="two members in combat's group")
    published: list[str] = []
    async with TopicWatcher(bootstrap, topics.OUTCOMES) as outcomes:
        # One saga at a time, until one reaches the dying instance: the survivor then holds
        # nothing in hand, and the only outbox row is the one the dead instance left.
        for i in range(60):
            saga = start_event(f"dead-{run}-{i}", {"name": f"Dee-{run}-{i % 5}"}, {"name": "Caterpie", **CERTAIN})
            await publish(bootstrap, [saga])
            published.append(saga.sagaid)

            async def outcome_or_crash(saga_id: str = saga.sagaid) -> bool:
                await outcomes.poll()
                return saga_id in outcomes.outcomes or not dying.alive

            await eventually(outcome_or_crash, timeout=60, what=f"{saga.sagaid}'s outcome or the crash")
            if not dying.alive:
                break
        assert not dying.alive, "no saga reached the second instance of combat"
        assert dying.proc is not None and dying.proc.returncode == 137
        del running.processes["combat#2"]  # dead for good, as intended
        stranded = published[-1]
        assert stranded not in outcomes.outcomes
        outbox = functools.partial(databases.rows, running.settings, "combat", "select count(*) from outbox")
        # the survivor deletes what it published once idle; the dead instance's row stays
        await eventually(lambda: holds(outbox, [(1,)]), timeout=4, what="only the dead instance's row in the outbox")

        backlog: list[float] = []

        async def stranded_saga_ended() -> bool:
            backlog.append(scraped(port).get(BACKLOG, 0))
            await outcomes.poll()
            return stranded in outcomes.outcomes

        await eventually(stranded_saga_ended, timeout=60, what="the stranded saga's outcome")

        # The survivor has every partition now and carries on.
        more = [
            start_event(f"dead-{run}-more-{i}", {"name": f"Eve-{run}-{i % 5}"}, {"name": "Caterpie", **CERTAIN})
            for i in range(10)
        ]
        await publish(bootstrap, more)
        published += [s.sagaid for s in more]
        await outcomes.wait_for(published, timeout=120)
        await eventually(lambda: caught_up(bootstrap, GROUPS), timeout=120, what="every group caught up")
        records = await outcomes.drain()

    async def backlog_empty() -> bool:
        return scraped(port).get(BACKLOG, -1) == 0

    await eventually(backlog_empty, timeout=30, what="the survivor's backlog back at 0")
    return published, records, backlog
