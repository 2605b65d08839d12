"""The participant loop against a real broker and a real database.

Each test runs the status step under a fresh consumer group and input topic, so the
window between local commit, publish, mark-sent and offset commit can be observed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import func, select

from capture.bootstrap import PARTICIPANTS, engine_for
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import TopicWatcher, start_event
from contracts import topics
from engine import faults
from engine.broker import kafka
from engine.participant import Participant
from engine.retry import RetryPolicy
from engine.wire.deadletter import REASON_HEADER
from engine.worker import rebuild, run
from engine.worker.rebuild import Rebuild, RebuildState
from services.status.tables import statuses
from tests import databases
from tests.support import caught_up, eventually


class Crashed(Exception):
    pass


@pytest.fixture
def participant() -> Participant:
    uid = uuid.uuid4().hex[:8]
    return dataclasses.replace(PARTICIPANTS["status"], name=f"status-it-{uid}", topics=(f"it.{uid}.status",))


@pytest.fixture
async def topic(participant: Participant, settings: Settings) -> AsyncIterator[str]:
    (name,) = participant.topics
    await kafka.ensure_topics(settings.bootstrap, [name, topics.dead_letters(name)], settings.partitions)
    yield name


async def produce(bootstrap: str, topic: str, *values: bytes, key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def for_saga(records: list[Any], saga_id: str) -> list[dict[str, Any]]:
    docs = [json.loads(r.value) for r in records]
    return [d for d in docs if d.get("sagaid") == saga_id]


async def consume_all(
    participant: Participant, topic: str, settings: Settings, values: list[bytes], key: bytes = b"k"
) -> tuple[list[Any], list[Any]]:
    """Produce ``values``, run the participant until it has consumed them all; what it dead-lettered
    and what it published downstream (capture.combat), each read from its topic."""
    engine = engine_for("status", settings)
    async with (
        TopicWatcher(settings.bootstrap, topics.dead_letters(topic)) as dlq,
        TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream,
    ):
        await produce(settings.bootstrap, topic, *values, key=key)
        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(CAPTURE, participant, settings, engine).run(stop))
        await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="all consumed")
        stop.set()
        await task
        return await dlq.drain(), await downstream.drain()


async def partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in await kafka.partition_ids(settings.bootstrap, topic)]


@pytest.mark.parametrize(
    ("point", "copies_on_topic"),
    [
        (faults.AFTER_LOCAL_COMMIT, 1),  # published only by the start-up flush
        (faults.AFTER_PUBLISH, 2),  # published, then flushed again: same id twice
        (faults.AFTER_MARK_SENT, 1),  # redelivered, absorbed by the inbox
    ],
)
async def test_a_crash_between_the_steps_loses_nothing_and_applies_nothing_twice(
    point: str,
    copies_on_topic: int,
    participant: Participant,
    topic: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash_here(configured: str | None, reached: str) -> None:
        if configured == reached:
            raise Crashed(reached)

    monkeypatch.setattr(faults, "check", crash_here)
    engine = engine_for("status", settings)
    saga = f"crash-{uuid.uuid4().hex[:8]}"
    envelope = start_event(saga, {"name": "Cora"}, {"name": "Snorlax"})
    async with TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream:
        await produce(settings.bootstrap, topic, envelope.to_json(), key=saga.encode())

        crashing = run.build_loop(CAPTURE, participant, settings.model_copy(update={"crash_at": point}), engine)
        with pytest.raises(Crashed):
            await asyncio.wait_for(crashing.run(asyncio.Event()), 60)
        assert set(
            (
                await kafka.committed_offsets(settings.bootstrap, participant.name, await partitions(settings, topic))
            ).values()
        ) == {0}
        published_before_restart = len(for_saga(await downstream.drain(), saga))
        assert published_before_restart == (0 if point == faults.AFTER_LOCAL_COMMIT else 1)

        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(CAPTURE, participant, settings, engine).run(stop))
        await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="offsets committed")
        stop.set()
        await task
        copies = for_saga(await downstream.drain(), saga)

    assert len(copies) == copies_on_topic
    assert {c["id"] for c in copies} == {copies[0]["id"]} and copies[0]["type"] == "PokemonParalyzed"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(statuses).where(statuses.c.saga_id == saga)).scalar() == 1
        inbox, outbox = participant.metadata.tables["inbox"], participant.metadata.tables["outbox"]
        assert conn.execute(select(func.count()).select_from(inbox).where(inbox.c.saga_id == saga)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == 0


async def test_the_offset_is_committed_after_the_next_event_is_published(
    participant: Participant, topic: str, settings: Settings
) -> None:
    saga = f"order-{uuid.uuid4().hex[:8]}"
    engine = engine_for("status", settings)
    async with TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream:
        await produce(settings.bootstrap, topic, start_event(saga, {"name": "Olga"}, {"name": "Mew"}).to_json())
        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(CAPTURE, participant, settings, engine).run(stop))
        await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="offset commit")
        # The commit is visible: the event it caused must already be on the topic.
        assert len(for_saga(await downstream.drain(), saga)) == 1
        stop.set()
        await task


async def test_unsent_outbox_rows_are_flushed_at_start_up(
    participant: Participant, topic: str, settings: Settings
) -> None:
    from tests.integration.test_processing import Rec

    saga = f"flush-{uuid.uuid4().hex[:8]}"
    engine = engine_for("status", settings)
    loop = run.build_loop(CAPTURE, participant, settings, engine)
    # A previous run committed its transaction and died before publishing.
    left = await loop.processor.apply([Rec(start_event(saga, {"name": "Fay"}, {"name": "Mew"}).to_json(), topic=topic)])
    assert len(left.outbox) == 1 and len(loop.processor.pending()) == 1
    async with TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await asyncio.wait_for(loop.ready.wait(), 30)  # started: the flush happens before
        stop.set()
        await task
        assert [d["type"] for d in for_saga(await downstream.drain(), saga)] == ["PokemonParalyzed"]
    assert loop.processor.pending() == []


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_service_keeps_going(
    participant: Participant, topic: str, settings: Settings
) -> None:
    saga = f"dlq-{uuid.uuid4().hex[:8]}"
    valid = start_event(saga, {"name": "Dan"}, {"name": "Mew"})
    invalid = json.loads(valid.to_json())
    invalid["data"]["pokemon"]["level"] = 500
    unknown = {**json.loads(valid.to_json()), "type": "PokemonEvolved", "id": "other"}
    values = [b"not json at all", json.dumps({"specversion": "1.0"}).encode(), json.dumps(invalid).encode(),
              json.dumps(unknown).encode(), valid.to_json()]  # fmt: skip
    dead, downstream = await consume_all(participant, topic, settings, values, key=saga.encode())
    forwarded = for_saga(downstream, saga)
    reasons = [dict(r.headers)[REASON_HEADER].decode() for r in dead]
    assert [r.split(":")[0] for r in reasons] == ["not_json", "not_cloudevent", "invalid_data", "unknown_type"]
    assert "pokemon.level" in reasons[2] and "PokemonEvolved" in reasons[3]
    assert dead[0].value == b"not json at all" and dead[0].key == saga.encode()
    assert [d["type"] for d in forwarded] == ["PokemonParalyzed"]


async def test_consumer_lag_is_reported_per_partition(participant: Participant, topic: str, settings: Settings) -> None:
    from prometheus_client import REGISTRY

    saga = f"lag-{uuid.uuid4().hex[:8]}"
    engine = engine_for("status", settings)
    await produce(settings.bootstrap, topic, start_event(saga, {"name": "Lia"}, {"name": "Mew"}).to_json())
    stop = asyncio.Event()
    task = asyncio.create_task(run.build_loop(CAPTURE, participant, settings, engine).run(stop))
    await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="consumed")
    stop.set()
    await task
    lags = [
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "pokesaga_consumer_lag"
        for s in metric.samples
        if s.labels["participant"] == participant.name
    ]
    assert lags == [0.0]  # one partition got the record, and it is consumed to its end


class Indescribable(Exception):
    """An error that fails again when anyone tries to say what it is."""

    def __str__(self) -> str:
        raise RuntimeError("cannot even describe this")


async def test_a_record_that_breaks_even_the_failure_path_is_dead_lettered_alone_and_the_rest_applied(
    participant: Participant, topic: str, settings: Settings
) -> None:
    """The last resort: an error of ours while applying a record makes the loop apply the batch one
    record at a time; the one that still fails is dead-lettered in a transaction of its own."""
    nonce = uuid.uuid4().hex[:8]
    doomed, fine = f"doomed-{nonce}", f"fine-{nonce}"
    real = participant.handlers["PokemonEncountered"]

    def handler(event: Any, uow: Any) -> Any:
        if uow.saga_id == doomed:
            raise Indescribable()
        return real(event, uow)

    def give_up(event: Any, uow: Any, reason: str, detail: str) -> Any:
        raise Indescribable()  # and its failure path fails the same way

    breaking = dataclasses.replace(participant, handlers={"PokemonEncountered": handler}, on_exhausted=give_up)
    values = [start_event(name, {"name": "Dee"}, {"name": "Mew"}).to_json() for name in (doomed, fine)]
    dead, downstream = await consume_all(breaking, topic, settings, values)
    forwarded = for_saga(downstream, fine)
    (letter,) = dead
    assert dict(letter.headers)[REASON_HEADER].decode().startswith("internal_error: RuntimeError")
    assert json.loads(letter.value)["sagaid"] == doomed
    assert [d["type"] for d in forwarded] == ["PokemonParalyzed"]


async def test_a_record_without_a_recorded_decision_waits_for_the_end_of_the_rebuild(
    participant: Participant, topic: str, settings: Settings
) -> None:
    """Rebuilding, a record this participant never published anything for is parked, and stays
    parked while another participant of the service has not replayed; then it is applied, and the
    history is let go."""
    saga = f"queued-{uuid.uuid4().hex[:8]}"
    sibling = f"{participant.name}.compensations"
    engine = engine_for("status", settings)  # created empty: marked for a rebuild
    state = RebuildState(engine, CAPTURE.services["status"].metadata, [participant.name, sibling])
    state.expand()
    await produce(settings.bootstrap, topic, start_event(saga, {"name": "Quinn"}, {"name": "Eevee"}).to_json())
    state.positioned(participant.name, rebuild.encode(await kafka.end_offsets(settings.bootstrap, [topic])))
    following = Rebuild(settings.bootstrap, state, participant, None)
    loop = run.build_loop(CAPTURE, participant, settings, engine, {"another-cause": []}, following)
    parked = "select count(*) from parked where saga_id = :s"
    async with TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))

        async def replayed_and_parked() -> bool:
            rows = state.rows()
            return rows[participant.name].rebuilt and databases.rows(settings, "status", parked, s=saga) == [(1,)]

        await eventually(replayed_and_parked, what="its history replayed, the record parked")
        assert for_saga(await downstream.drain(), saga) == []  # the sibling has not replayed: nothing decided
        assert loop.processor.rebuilding
        state.mark_rebuilt(sibling)

        async def applied() -> bool:
            return bool(for_saga(await downstream.drain(), saga))

        await eventually(applied, what="the parked record applied after the rebuild")
        stop.set()
        await task
        seen = for_saga(await downstream.drain(), saga)
    assert [e["type"] for e in seen] == ["PokemonParalyzed"]
    assert len(loop.processor.history) == 0 and loop.processor.history.held == 0  # let go
    assert not loop.processor.rebuilding
    assert databases.rows(settings, "status", parked, s=saga) == [(0,)]
    assert databases.rows(settings, "status", "select count(*) from rebuild") == [(0,)]


async def test_a_failing_record_is_parked_its_offset_committed_and_the_sagas_behind_it_pass(
    participant: Participant, topic: str, settings: Settings
) -> None:
    """One saga's record keeps failing (transient): its offset is committed with its batch, the
    other sagas on its partition go through, a retry notice says so; released, it is applied once."""
    nonce = uuid.uuid4().hex[:8]
    stalled, others = f"stalled-{nonce}", [f"other-{nonce}-{i}" for i in range(10)]
    release = threading.Event()
    real = participant.handlers["PokemonEncountered"]

    def handler(event: Any, uow: Any) -> Any:
        if uow.saga_id == stalled and not release.is_set():
            raise RuntimeError("not yet")
        return real(event, uow)

    flaky = dataclasses.replace(participant, handlers={"PokemonEncountered": handler})
    policy = RetryPolicy(initial_interval=0.05, maximum_interval=0.2, maximum_attempts=0)
    settings = settings.model_copy(update={"retry": policy})
    values = [start_event(s, {"name": "Pat"}, {"name": "Eevee"}).to_json() for s in [stalled, *others]]
    parked = "select count(*) from parked where saga_id = :s"
    async with (
        TopicWatcher(settings.bootstrap, topics.COMBAT) as downstream,
        TopicWatcher(settings.bootstrap, CAPTURE.retries_topic) as notices,
    ):
        await produce(settings.bootstrap, topic, *values)  # one key: one partition, the stalled saga first
        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(CAPTURE, flaky, settings, engine_for("status", settings)).run(stop))
        await eventually(lambda: caught_up(settings.bootstrap, {flaky.name: [topic]}), what="every offset committed")

        async def the_others_through() -> bool:
            await downstream.poll()
            return all(downstream.outcomes.get(o) for o in others)

        await eventually(the_others_through, what="the other sagas past the stalled one")
        assert stalled not in downstream.outcomes
        assert databases.rows(settings, "status", parked, s=stalled) == [(1,)]

        async def said() -> bool:
            await notices.poll()
            return bool(notices.outcomes.get(stalled))

        await eventually(said, what="a retry notice")
        release.set()

        async def applied() -> bool:
            await downstream.poll()
            return bool(downstream.outcomes.get(stalled))

        await eventually(applied, what="the stalled saga applied once released")
        stop.set()
        await task
        await downstream.drain()
    assert [o.type for o in downstream.outcomes[stalled]] == ["PokemonParalyzed"]
    assert databases.rows(settings, "status", parked, s=stalled) == [(0,)]
    (notice, *_) = notices.outcomes[stalled]
    assert notice.type == "pokesaga.StepRetrying" and notice.data["participant"] == flaky.name
