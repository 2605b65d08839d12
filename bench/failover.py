"""``pokesaga bench --failover``: how long a stopped instance's partitions stay unowned.

Two instances of the status service share its consumer group (and its database). Once both
consume, one is stopped (SIGKILL: a crash; SIGTERM: a clean stop; or SIGKILL and at once a
restart under the same name), one start event lands on every partition of ``capture.status``,
and the clock runs until the group has committed past every one of them: the time during which
some partition had no one consuming it. The session settings come from the environment
(``POKESAGA_SESSION_TIMEOUT_MS``, ``POKESAGA_HEARTBEAT_INTERVAL_MS``); ``--static-membership``
names the two instances (``group.instance.id``). One JSON line.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from capture.processes import ServiceProcess
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import start_event
from contracts import topics
from engine.broker import kafka
from engine.local.broker import provisioned

SERVICE = "status"
WAYS = ("sigkill", "sigkill_then_restart", "sigterm")


async def consumed(bootstrap: str, deadline: float) -> None:
    """Until the group has committed up to the end of every partition of its topic."""
    ends = await kafka.end_offsets(bootstrap, [topics.STATUS])
    while True:
        try:
            done = await kafka.committed_offsets(bootstrap, SERVICE, ends)
        except KafkaError:  # a coordinator moving with the rebalance: ask again
            done = {}
        if all(done.get(tp, 0) >= end for tp, end in ends.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the surviving instance did not consume every partition within 120s")
        await asyncio.sleep(0.05)


async def group(bootstrap: str) -> tuple[str, int]:
    try:
        return await kafka.group_state(bootstrap, SERVICE)
    except KafkaError:  # no coordinator yet: a new broker
        return "Unknown", 0


async def probe(bootstrap: str, partitions: list[int], tag: str) -> None:
    """One start event on each partition."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        for p in partitions:
            event = start_event(f"failover-{tag}-{p}", {"name": f"failover-{tag}"}, {"name": "Pidgey"})
            await producer.send_and_wait(topics.STATUS, event.to_json(), key=event.sagaid.encode(), partition=p)
    finally:
        await producer.stop()


async def once(settings: Settings, way: str, static: bool, data: Path, tag: str) -> float:
    """Seconds from stopping one instance to every partition consumed again."""
    bootstrap = settings.bootstrap
    names = ("a", "b")
    processes = {
        name: ServiceProcess(
            SERVICE,
            settings,
            data / "logs",
            {"POKESAGA_GROUP_INSTANCE_ID": f"failover-{tag}-{name}"} if static else {},
        )
        for name in names
    }
    partitions = await kafka.partition_ids(bootstrap, topics.STATUS)
    try:
        for process in processes.values():
            process.start()
        deadline = time.monotonic() + 120
        while await group(bootstrap) != ("Stable", 2):
            if time.monotonic() > deadline:
                raise TimeoutError("the two instances did not join their group within 120s")
            await asyncio.sleep(0.1)
        await probe(bootstrap, partitions, f"{tag}-warm")
        await consumed(bootstrap, time.monotonic() + 120)  # both consume: the group is settled
        gone = processes["a"]
        started = time.monotonic()
        if way == "sigterm":
            gone.terminate()
        else:
            gone.kill()
            if way == "sigkill_then_restart":
                gone.start()
        await probe(bootstrap, partitions, tag)
        await consumed(bootstrap, started + 120)
        return time.monotonic() - started
    finally:
        for process in processes.values():
            process.stop()


async def measure(settings: Settings, rounds: int, static: bool, data: Path) -> dict[str, Any]:
    await kafka.ensure_topics(settings.bootstrap, CAPTURE.all_topics(), settings.partitions)
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    for round_ in range(rounds):
        for way in WAYS:
            taken = await once(settings, way, static, data, f"{int(time.time())}-{round_}-{way}")
            seconds[way].append(round(taken, 2))
            print(f"pokesaga bench: {way} round {round_ + 1}: {taken:.2f}s", file=sys.stderr)
    return {
        "failover": {
            "session_timeout_ms": settings.session_timeout_ms,
            "heartbeat_interval_ms": settings.heartbeat_interval_ms,
            "static_membership": static,
            "rounds": rounds,
        }
        | {f"{way}_s": {"median": statistics.median(s), "runs": s} for way, s in seconds.items()}
    }


def run(settings: Settings, rounds: int, static: bool) -> int:
    """Provision a private broker unless one is configured, measure, print one JSON line."""
    data = Path(tempfile.mkdtemp(prefix="pokesaga-failover-"))
    settings = settings.model_copy(update={"data_dir": data, "status_db_url": None})
    try:
        with provisioned(settings, state=data / "broker") as address:
            live = settings.model_copy(update={"kafka_bootstrap_servers": address})
            figures = asyncio.run(measure(live, rounds, static, data))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(figures))
    return 0
