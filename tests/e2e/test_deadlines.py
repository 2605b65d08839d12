"""Saga deadlines end to end: a saga past its deadline unwinds, however it got there.

The services run as processes on their own databases; combat is stopped, or stalled, to make a
saga late at combat, after status has applied it (so status has something to restore).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from capture import views
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from tests.e2e.conftest import CERTAIN, Cluster, cluster
from tests.support import eventually


@pytest.fixture(scope="module")
def late(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(kafka_bootstrap, tmp_path_factory.mktemp("deadlines")) as running:
        yield running


def a_saga(prefix: str, seconds: float) -> tuple[Any, datetime]:
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    trainer = {"name": f"Dl-{uuid.uuid4().hex[:6]}"}
    return start_event(f"{prefix}{uuid.uuid4()}", trainer, {"name": "Caterpie", **CERTAIN}, deadline=deadline), deadline


async def late_at_combat(running: Cluster, saga: Any, deadline: datetime, restart: dict[str, str]) -> dict[str, Any]:
    """Publish ``saga``, let status apply it, wait for its deadline, start combat with ``restart``:
    the saga's outcome, as published."""
    bootstrap = running.settings.bootstrap
    async with TopicWatcher(bootstrap) as outcomes, TopicWatcher(bootstrap, topics.COMBAT) as at_combat:
        await publish(bootstrap, [saga])
        await at_combat.wait_for([saga.sagaid], timeout=60)  # status applied it in time
        if not restart.get("POKESAGA_STALL"):

            async def past() -> bool:
                return datetime.now(UTC) > deadline

            await eventually(past, timeout=30, what="the deadline")
        running.start("combat", **restart)
        await outcomes.wait_for([saga.sagaid], timeout=90)
        (record,) = [r for r in outcomes.records if r.key == saga.sagaid.encode()]
    return json.loads(record.value)  # type: ignore[no-any-return]


def unwound(running: Cluster, outcome: dict[str, Any], saga: Any) -> None:
    assert outcome["type"] == "CaptureFailed", outcome
    assert (outcome["data"]["reason"], outcome["data"]["failed_step"]) == ("deadline_exceeded", "combat")
    assert outcome["sagadeadline"] == saga.model_dump(mode="json")["sagadeadline"]  # passed on by every step
    shown = views.saga(running.settings, saga.sagaid)
    assert shown["status"]["outcome"] == "restored"  # the chain unwound what status did
    assert shown["combat"]["outcome"] == "failed:deadline_exceeded" and shown["combat"]["damage"] == 0


async def test_a_deadline_that_passed_while_a_service_was_down_unwinds_the_saga_when_it_comes_back(
    late: Cluster,
) -> None:
    late.stop("combat")
    saga, deadline = a_saga("down-", 3)
    outcome = await late_at_combat(late, saga, deadline, {})
    unwound(late, outcome, saga)


async def test_a_deadline_reached_while_the_step_is_retrying_unwinds_the_saga(late: Cluster) -> None:
    """Combat fails the saga for a minute (transient), retrying without limit: the deadline ends it."""
    late.stop("combat")
    saga, deadline = a_saga("stalled-", 4)
    started = time.monotonic()
    retrying = {"POKESAGA_STALL": "combat=stalled-:60", "POKESAGA_STEP_RETRY": json.dumps({"combat": {
        "maximum_attempts": 0, "initial_interval": 0.5, "maximum_interval": 30}})}  # fmt: skip
    outcome = await late_at_combat(late, saga, deadline, retrying)
    unwound(late, outcome, saga)
    assert time.monotonic() - started < 60  # the deadline, not the end of the stall, ended it
    late.stop("combat")
    late.start("combat")  # as it was
    await late.joined()
