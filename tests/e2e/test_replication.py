"""Replication, on a local 3-node KRaft cluster of the module's own: every topic the services
and the tracker create has 3 replicas and min.insync.replicas 2; existing topics with fewer
replicas are refused in one line, unless accepted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from capture.processes import ServiceProcess
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import TopicWatcher, publish, start_event
from capture.tracking import INTERNAL_TOPICS
from engine.broker import kafka
from engine.local.broker import LocalKafka, free_port
from tests.conftest import new_cluster
from tests.e2e.conftest import CERTAIN, cluster
from tests.e2e.test_configuration import pokesaga, refused, user_env
from tests.support import eventually, http_get

OURS = [*CAPTURE.all_topics(), *INTERNAL_TOPICS]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    with new_cluster(tmp_path_factory.mktemp("cluster")) as local:
        yield local


@pytest.fixture
def bootstrap(local_cluster: LocalKafka) -> str:
    """The cluster, with none of the topics pokesaga makes: each test starts from a clean slate."""
    address = local_cluster.address()
    assert address is not None
    asyncio.run(drop_topics(address, OURS))
    return address


async def drop_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        present = [n for n in names if n in set(await admin.list_topics())]
        if present:
            await admin.delete_topics(present)

        async def gone() -> bool:
            return not set(present) & set(await admin.list_topics())

        await eventually(gone, timeout=60, what=f"topics {present} deleted")
    finally:
        await admin.close()


def made_with_one_replica(bootstrap: str, names: list[str]) -> None:
    """``names`` created with one replica. Until every broker has seen the deletion of the test
    before, one may still list a name and the creation skip it: made again until all hold one."""

    async def made() -> bool:
        await kafka.ensure_topics(bootstrap, names, 3, replication=1)
        return await kafka.replication_of(bootstrap, names) == dict.fromkeys(names, 1)

    asyncio.run(eventually(made, timeout=60, what=f"{names} with one replica"))


@pytest.mark.no_database  # the replicas are the broker's: the PostgreSQL pass starts no 3-node cluster
def test_every_topic_the_services_and_the_tracker_create_has_three_replicas_and_two_in_sync(
    bootstrap: str, tmp_path: Path
) -> None:
    tracker_port = free_port()
    with cluster(bootstrap, tmp_path) as running:
        running.start("tracker", POKESAGA_TRACKER_PORT=str(tracker_port))

        async def a_saga_completes_and_the_tracker_stores_it() -> None:
            saga = start_event(None, {"name": "Sacha"}, {"name": "Caterpie", **CERTAIN})
            async with TopicWatcher(bootstrap) as watcher:
                await publish(bootstrap, [saga])
                assert (await watcher.wait_for([saga.sagaid], timeout=90)).keys() == {saga.sagaid}

            async def stored() -> bool:
                return http_get(tracker_port, f"/sagas/{saga.sagaid}")[0] == 200 and await kafka.topic_exists(
                    bootstrap, INTERNAL_TOPICS[0]
                )

            await eventually(stored, timeout=90, what="the tracker's timeline and changelog")

        asyncio.run(a_saga_completes_and_the_tracker_stores_it())
    replicas = asyncio.run(kafka.replication_of(bootstrap, [*OURS, "__consumer_offsets"]))
    assert replicas == dict.fromkeys([*OURS, "__consumer_offsets"], 3)
    for topic in [*OURS, "__consumer_offsets"]:
        assert asyncio.run(kafka.topic_config(bootstrap, topic, "min.insync.replicas")) == "2", topic


@pytest.mark.no_database  # the refusal comes before any database is touched
def test_a_service_refuses_topics_with_fewer_replicas_in_one_line_unless_told_to_accept(
    bootstrap: str, tmp_path: Path
) -> None:
    made_with_one_replica(bootstrap, CAPTURE.all_topics())
    env = user_env(bootstrap, tmp_path / "data")
    line = refused(pokesaga(env, "run", "status"), "POKESAGA_REPLICATION_FACTOR", "fewer than 3 replicas", code=1)
    assert all(f"{topic} (1)" in line for topic in CAPTURE.all_topics()), line
    assert "POKESAGA_ACCEPT_UNDER_REPLICATED=true" in line

    port = free_port()
    accepted = ServiceProcess(
        "status",
        Settings(kafka_bootstrap_servers=bootstrap, data_dir=tmp_path / "data"),
        tmp_path / "logs",
        {"POKESAGA_ACCEPT_UNDER_REPLICATED": "true", "POKESAGA_METRICS_PORT": str(port)},
    ).start()
    try:

        async def ready() -> bool:
            return http_get(port, "/health/ready")[0] == 200

        asyncio.run(eventually(ready, timeout=90, what="the service running on under-replicated topics"))
    finally:
        assert accepted.stop() == 0
    said = [line for line in accepted.log_path.read_text().splitlines() if "fewer than 3 replicas" in line]
    assert len(said) == 1 and "running anyway (POKESAGA_ACCEPT_UNDER_REPLICATED)" in said[0], said


@pytest.mark.no_database
def test_the_tracker_refuses_its_changelog_with_fewer_replicas_in_one_line(bootstrap: str, tmp_path: Path) -> None:
    made_with_one_replica(bootstrap, list(INTERNAL_TOPICS))
    env = user_env(bootstrap, tmp_path / "data", POKESAGA_TRACKER_PORT=str(free_port()))
    line = refused(pokesaga(env, "run", "tracker"), "POKESAGA_REPLICATION_FACTOR", f"{INTERNAL_TOPICS[0]} (1)", code=1)
    assert "capture.status" not in line  # the saga's topics were created as asked


@pytest.mark.no_database
def test_more_replicas_than_brokers_is_refused_in_one_line(bootstrap: str, tmp_path: Path) -> None:
    env = user_env(bootstrap, tmp_path / "data", POKESAGA_REPLICATION_FACTOR="4")
    refused(pokesaga(env, "run", "status"), "POKESAGA_REPLICATION_FACTOR", "4 replicas asked", "3 broker(s)", code=1)
