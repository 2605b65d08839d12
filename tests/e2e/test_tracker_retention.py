"""The tracker forgets finished sagas once they are older than its retention, and keeps the
others: what it holds stays bounded however many sagas go by.

A broker of its own, so the tracker holds exactly the sagas this module started; the
retention is a few seconds (``POKESAGA_TRACKER_RETENTION_HOURS``), the default is a day.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine.broker import kafka
from engine.local.broker import free_port
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, Cluster, cluster
from tests.support import eventually, http_get, metric_samples

pytestmark = pytest.mark.no_database  # the tracker reads topics only: once, on the SQLite pass

RETENTION_SECONDS = 4
CHANGELOG = "pokesaga-tracker-sagas-changelog"


class Tracker:
    def __init__(self, running: Cluster, port: int) -> None:
        self.running = running
        self.port = port

    def start(self) -> None:
        self.running.start(
            "tracker",
            POKESAGA_TRACKER_PORT=str(self.port),
            POKESAGA_TRACKER_RETENTION_HOURS=str(RETENTION_SECONDS / 3600),
        )

    def saga(self, saga_id: str) -> tuple[int, Any]:
        return http_get(self.port, f"/sagas/{saga_id}")

    def listed(self) -> set[str]:
        status, body = http_get(self.port, "/sagas?limit=1000")
        assert status == 200, body
        return {s["saga_id"] for s in body["sagas"]}

    def metric(self, name: str) -> float:
        return metric_samples(self.port).get((name, ()), 0.0)

    async def shows(self, saga_id: str, *states: str) -> None:
        async def seen() -> bool:
            status, body = self.saga(saga_id)
            return status == 200 and body["state"] in states

        await eventually(seen, timeout=90, what=f"the tracker to show {saga_id} {' or '.join(states)}")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:
    data = tmp_path_factory.mktemp("retention")
    with new_broker(data / "broker") as bootstrap, cluster(bootstrap, data) as running:
        found = Tracker(running, free_port())
        found.start()
        yield found


async def tombstoned(bootstrap: str, saga_id: str) -> bool:
    """The last record of ``saga_id`` in the tracker's changelog deletes it."""
    key, last = json.dumps(saga_id).encode(), {}
    async for record in kafka.scan_to_end(bootstrap, [CHANGELOG]):
        last[record.key] = record.value
    return key in last and last[key] is None


async def test_a_finished_saga_older_than_the_retention_is_forgotten_and_an_unfinished_one_kept(
    tracker: Tracker,
) -> None:
    run = uuid.uuid4().hex[:6]
    bootstrap = tracker.running.settings.bootstrap
    unfinished = start_event(f"waiting-{run}", {"name": f"Uma-{run}"}, {"name": "Caterpie", **CERTAIN})
    finished = start_event(f"zapped-{run}", {"name": f"Fay-{run}"}, {"name": "Pikachu"})  # fails at status
    tracker.running.stop("combat")  # the first saga waits on combat, with no outcome
    try:
        await publish(bootstrap, [unfinished])
        await tracker.shows(unfinished.sagaid, "running", "stuck")
        await publish(bootstrap, [finished])  # the later of the two
        await tracker.shows(finished.sagaid, "failed")

        async def forgotten() -> bool:
            return tracker.saga(finished.sagaid)[0] == 404

        await eventually(forgotten, timeout=60, what="the finished saga forgotten")
        status, kept = tracker.saga(unfinished.sagaid)
        assert status == 200 and kept["state"] in ("running", "stuck") and kept["waiting_on"] == "combat"
        assert unfinished.sagaid in tracker.listed() and finished.sagaid not in tracker.listed()
        assert tracker.metric("pokesaga_tracker_sagas_forgotten_total") >= 1

        async def deleted() -> bool:  # the tombstone goes out with the tracker's next produce batch
            return await tombstoned(bootstrap, finished.sagaid)

        await eventually(deleted, timeout=30, what="the tombstone in the changelog")  # forgotten after a restart too
    finally:
        tracker.running.start("combat")
    await tracker.shows(unfinished.sagaid, "delivered")

    async def forgotten_once_finished() -> bool:
        return tracker.saga(unfinished.sagaid)[0] == 404

    await eventually(forgotten_once_finished, timeout=60, what="the first saga forgotten once it finished")


async def test_what_the_tracker_holds_stays_bounded_under_a_stream_of_sagas(tracker: Tracker) -> None:
    run, waves, size = uuid.uuid4().hex[:6], 4, 25
    bootstrap = tracker.running.settings.bootstrap
    forgotten_before = tracker.metric("pokesaga_tracker_sagas_forgotten_total")
    published: list[str] = []
    async with TopicWatcher(bootstrap, topics.OUTCOMES) as outcomes:
        for wave in range(waves):
            sagas = [
                start_event(
                    f"stream-{run}-{wave}-{i}", {"name": f"S-{run}-{wave}-{i}"}, {"name": "Caterpie", **CERTAIN}
                )
                for i in range(size)
            ]
            await publish(bootstrap, sagas)
            published += [s.sagaid for s in sagas]
            ended = await outcomes.wait_for([s.sagaid for s in sagas], timeout=120)
            assert len(ended) == size

            async def no_more_than_a_wave() -> bool:
                return tracker.metric("pokesaga_tracker_sagas_retained") <= size and len(tracker.listed()) <= size

            # The earlier waves are forgotten as this one runs: the tracker never holds them all.
            await eventually(no_more_than_a_wave, timeout=60, what=f"at most one wave held after wave {wave}")

    async def nothing_held() -> bool:
        overview = http_get(tracker.port, "/overview")[1]  # the console's figures forget them too
        held = overview["retained"] + sum(overview["states"].values()) + len(overview["failures"])
        return tracker.metric("pokesaga_tracker_sagas_retained") == 0 and not tracker.listed() and held == 0

    await eventually(nothing_held, timeout=60, what="every finished saga forgotten")
    assert tracker.metric("pokesaga_tracker_sagas_forgotten_total") - forgotten_before == len(published)
    assert tracker.metric("pokesaga_tracker_sagas_started_total") >= len(published)
