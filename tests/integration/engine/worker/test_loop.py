"""The participant loop (engine.worker.loop) against a real broker and a real database.

Each test runs the toy saga's first step under a fresh consumer group and input topic, so the
window between local commit, publish, mark-sent and offset commit can be observed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition
from sqlalchemy import func, select

from engine import faults
from engine.broker import kafka
from engine.participant import Participant
from engine.retry import RetryPolicy
from engine.store.db import messaging_tables
from engine.wire.deadletter import REASON_HEADER, dead_letters
from engine.worker import rebuild, run
from engine.worker.rebuild import Rebuild, RebuildState
from tests import databases
from tests.support import caught_up, eventually
from tests.toy.events import SECOND
from tests.toy.kit import Rec, TopicWatcher, applied, asked, engine_for, for_saga, produce, renamed, running
from tests.toy.saga import TOY, Settings
from tests.toy.tables import marks


class Crashed(Exception):
    pass


async def consume_all(
    participant: Participant, topic: str, settings: Settings, values: list[bytes], key: bytes = b"k"
) -> tuple[list[Any], list[Any]]:
    """Produce ``values``, run the participant until it has consumed them all; what it dead-lettered
    and what it published downstream (toy.second), each read from its topic."""
    engine = engine_for("first", settings)
    async with (
        TopicWatcher(settings.bootstrap, dead_letters(topic)) as dlq,
        TopicWatcher(settings.bootstrap, SECOND) as downstream,
    ):
        await produce(settings.bootstrap, topic, *values, key=key)
        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(TOY, participant, settings, engine).run(stop))
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
        (faults.AFTER_PUBLISH, 2),  # published, then flushed again: same id twice; redelivered, absorbed
        (faults.AFTER_OFFSET_COMMIT, 2),  # acknowledged, then its published row flushed again: same id twice
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
    engine = engine_for("first", settings)
    saga = f"crash-{uuid.uuid4().hex[:8]}"
    envelope = asked(saga, "Cora")
    async with TopicWatcher(settings.bootstrap, SECOND) as downstream:
        await produce(settings.bootstrap, topic, envelope.to_json(), key=saga.encode())

        crashing = run.build_loop(TOY, participant, settings.model_copy(update={"crash_at": point}), engine)
        with pytest.raises(Crashed):
            await asyncio.wait_for(crashing.run(asyncio.Event()), 60)
        committed = await kafka.committed_offsets(
            settings.bootstrap, participant.name, await partitions(settings, topic)
        )
        assert sorted(committed.values()) == [0] * (len(committed) - 1) + [
            1 if point == faults.AFTER_OFFSET_COMMIT else 0
        ]
        published_before_restart = len(for_saga(await downstream.drain(), saga))
        assert published_before_restart == (0 if point == faults.AFTER_LOCAL_COMMIT else 1)

        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(TOY, participant, settings, engine).run(stop))
        await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="offsets committed")
        stop.set()
        await task
        copies = for_saga(await downstream.drain(), saga)

    assert len(copies) == copies_on_topic
    assert {c["id"] for c in copies} == {copies[0]["id"]} and copies[0]["type"] == "FirstDone"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(marks).where(marks.c.saga_id == saga)).scalar() == 1
        inbox, outbox = messaging_tables()  # the engine's own tables
        assert conn.execute(select(func.count()).select_from(inbox).where(inbox.c.saga_id == saga)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == 0


async def test_the_offset_is_committed_after_the_next_event_is_published(
    participant: Participant, topic: str, settings: Settings
) -> None:
    saga = f"order-{uuid.uuid4().hex[:8]}"
    engine = engine_for("first", settings)
    async with TopicWatcher(settings.bootstrap, SECOND) as downstream:
        await produce(settings.bootstrap, topic, asked(saga, "Olga").to_json())
        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(TOY, participant, settings, engine).run(stop))
        await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="offset commit")
        # The commit is visible: the event it caused must already be on the topic.
        assert len(for_saga(await downstream.drain(), saga)) == 1
        stop.set()
        await task


async def test_unsent_outbox_rows_are_flushed_at_start_up(
    participant: Participant, topic: str, settings: Settings
) -> None:
    saga = f"flush-{uuid.uuid4().hex[:8]}"
    engine = engine_for("first", settings)
    loop = run.build_loop(TOY, participant, settings, engine)
    # A previous run committed its transaction and died before publishing.
    left = await applied(loop.processor, [Rec(asked(saga, "Fay").to_json(), topic=topic)])
    assert len(left.outbox) == 1 and len(loop.processor.pending()) == 1
    async with TopicWatcher(settings.bootstrap, SECOND) as downstream:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await asyncio.wait_for(loop.ready.wait(), 30)  # started: the flush happens before
        stop.set()
        await task
        assert [d["type"] for d in for_saga(await downstream.drain(), saga)] == ["FirstDone"]
    assert loop.processor.pending() == []


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_service_keeps_going(
    participant: Participant, topic: str, settings: Settings
) -> None:
    saga = f"dlq-{uuid.uuid4().hex[:8]}"
    valid = asked(saga, "Dan")
    invalid = json.loads(valid.to_json())
    invalid["data"]["name"] = "x" * 500
    unknown = {**json.loads(valid.to_json()), "type": "ToyEvolved", "id": "other"}
    values = [b"not json at all", json.dumps({"specversion": "1.0"}).encode(), json.dumps(invalid).encode(),
              json.dumps(unknown).encode(), valid.to_json()]  # fmt: skip
    dead, downstream = await consume_all(participant, topic, settings, values, key=saga.encode())
    forwarded = for_saga(downstream, saga)
    reasons = [dict(r.headers)[REASON_HEADER].decode() for r in dead]
    assert [r.split(":")[0] for r in reasons] == ["not_json", "not_cloudevent", "invalid_data", "unknown_type"]
    assert "name" in reasons[2] and "ToyEvolved" in reasons[3]
    assert dead[0].value == b"not json at all" and dead[0].key == saga.encode()
    assert [d["type"] for d in forwarded] == ["FirstDone"]


async def test_consumer_lag_is_reported_per_partition(participant: Participant, topic: str, settings: Settings) -> None:
    from prometheus_client import REGISTRY

    saga = f"lag-{uuid.uuid4().hex[:8]}"
    engine = engine_for("first", settings)
    await produce(settings.bootstrap, topic, asked(saga, "Lia").to_json())
    stop = asyncio.Event()
    task = asyncio.create_task(run.build_loop(TOY, participant, settings, engine).run(stop))
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
    real = participant.handlers["Asked"]

    def handler(event: Any, uow: Any) -> Any:
        if uow.saga_id == doomed:
            raise Indescribable()
        return real(event, uow)

    def give_up(event: Any, uow: Any, reason: str, detail: str) -> Any:
        raise Indescribable()  # and its failure path fails the same way

    breaking = dataclasses.replace(participant, handlers={"Asked": handler}, on_exhausted=give_up)
    values = [asked(name, "Dee").to_json() for name in (doomed, fine)]
    dead, downstream = await consume_all(breaking, topic, settings, values)
    forwarded = for_saga(downstream, fine)
    (letter,) = dead
    assert dict(letter.headers)[REASON_HEADER].decode().startswith("internal_error: RuntimeError")
    assert json.loads(letter.value)["sagaid"] == doomed
    assert [d["type"] for d in forwarded] == ["FirstDone"]


async def test_a_record_without_a_recorded_decision_waits_for_the_end_of_the_rebuild(
    participant: Participant, topic: str, settings: Settings
) -> None:
    """Rebuilding, a record this participant never published anything for is parked, and stays
    parked while another participant of the service has not replayed; then it is applied, and the
    history is let go."""
    saga = f"queued-{uuid.uuid4().hex[:8]}"
    sibling = f"{participant.name}.compensations"
    engine = engine_for("first", settings)  # created empty: marked for a rebuild
    state = RebuildState(engine, TOY.services["first"].metadata, [participant.name, sibling])
    state.expand()
    await produce(settings.bootstrap, topic, asked(saga, "Quinn").to_json())
    state.positioned(participant.name, rebuild.encode(await kafka.end_offsets(settings.bootstrap, [topic])))
    following = Rebuild(settings.bootstrap, state, participant, None)
    loop = run.build_loop(TOY, participant, settings, engine, {"another-cause": []}, following)
    parked = "select count(*) from parked where saga_id = :s"
    async with TopicWatcher(settings.bootstrap, SECOND) as downstream:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))

        async def replayed_and_parked() -> bool:
            rows = state.rows()
            return rows[participant.name].rebuilt and databases.rows(settings, "first", parked, s=saga) == [(1,)]

        await eventually(replayed_and_parked, what="its history replayed, the record parked")
        assert for_saga(await downstream.drain(), saga) == []  # the sibling has not replayed: nothing decided
        assert loop.processor.rebuilding
        state.mark_rebuilt(sibling)

        async def decided() -> bool:
            return bool(for_saga(await downstream.drain(), saga))

        await eventually(decided, what="the parked record applied after the rebuild")
        stop.set()
        await task
        seen = for_saga(await downstream.drain(), saga)
    assert [e["type"] for e in seen] == ["FirstDone"]
    assert len(loop.processor.history) == 0 and loop.processor.history.held == 0  # let go
    assert not loop.processor.rebuilding
    assert databases.rows(settings, "first", parked, s=saga) == [(0,)]
    assert databases.rows(settings, "first", "select count(*) from rebuild") == [(0,)]


async def test_a_failing_record_is_parked_its_offset_committed_and_the_sagas_behind_it_pass(
    participant: Participant, topic: str, settings: Settings
) -> None:
    """One saga's record keeps failing (transient): its offset is committed with its batch, the
    other sagas on its partition go through, a retry notice says so; released, it is applied once."""
    nonce = uuid.uuid4().hex[:8]
    stalled, others = f"stalled-{nonce}", [f"other-{nonce}-{i}" for i in range(10)]
    release = threading.Event()
    real = participant.handlers["Asked"]

    def handler(event: Any, uow: Any) -> Any:
        if uow.saga_id == stalled and not release.is_set():
            raise RuntimeError("not yet")
        return real(event, uow)

    flaky = dataclasses.replace(participant, handlers={"Asked": handler})
    policy = RetryPolicy(initial_interval=0.05, maximum_interval=0.2, maximum_attempts=0)
    settings = settings.model_copy(update={"retry": policy})
    values = [asked(s, "Pat").to_json() for s in [stalled, *others]]
    parked = "select count(*) from parked where saga_id = :s"
    async with (
        TopicWatcher(settings.bootstrap, SECOND) as downstream,
        TopicWatcher(settings.bootstrap, TOY.retries_topic) as notices,
    ):
        await produce(settings.bootstrap, topic, *values)  # one key: one partition, the stalled saga first
        stop = asyncio.Event()
        task = asyncio.create_task(run.build_loop(TOY, flaky, settings, engine_for("first", settings)).run(stop))
        await eventually(lambda: caught_up(settings.bootstrap, {flaky.name: [topic]}), what="every offset committed")

        async def the_others_through() -> bool:
            await downstream.poll()
            return all(downstream.outcomes.get(o) for o in others)

        await eventually(the_others_through, what="the other sagas past the stalled one")
        assert stalled not in downstream.outcomes
        assert databases.rows(settings, "first", parked, s=stalled) == [(1,)]

        async def said() -> bool:
            await notices.poll()
            return bool(notices.outcomes.get(stalled))

        await eventually(said, what="a retry notice")
        release.set()

        async def applied_once_released() -> bool:
            await downstream.poll()
            return bool(downstream.outcomes.get(stalled))

        await eventually(applied_once_released, what="the stalled saga applied once released")
        stop.set()
        await task
        await downstream.drain()
    assert [o.type for o in downstream.outcomes[stalled]] == ["FirstDone"]
    assert databases.rows(settings, "first", parked, s=stalled) == [(0,)]
    (notice, *_) = notices.outcomes[stalled]
    assert notice.type == "pokesaga.StepRetrying" and notice.data["participant"] == flaky.name


async def test_the_inbox_pruner_survives_database_errors_and_the_loop_goes_on(
    participant: Participant, topic: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_for("first", settings)
    loop = run.build_loop(TOY, participant, settings, engine)
    loop.prune_every = 0.2
    inbox, _ = messaging_tables()
    old = {"consumer": participant.name, "event_id": f"old-{uuid.uuid4().hex[:8]}", "saga_id": "old", "type": "X",
           "topic": topic, "partition": 0, "offset": 0, "received_at": 0.0}  # fmt: skip
    caplog.set_level(logging.WARNING, logger="engine.worker.loop")
    renamed(engine, "inbox", "inbox_away")
    saga = f"after-{uuid.uuid4().hex[:8]}"
    async with TopicWatcher(settings.bootstrap, SECOND) as downstream, running(loop):
        await eventually(lambda: _async("pruning the inbox failed" in caplog.text), timeout=30, what="a failed prune")
        await asyncio.to_thread(renamed, engine, "inbox_away", "inbox")
        with engine.begin() as conn:
            conn.execute(inbox.insert(), [old])

        def remembered() -> int:
            with engine.connect() as conn:
                query = select(func.count()).select_from(inbox).where(inbox.c.event_id == old["event_id"])
                return int(conn.execute(query).scalar_one())

        await eventually(lambda: _async(remembered() == 0), timeout=30, what="the old inbox row pruned")
        # The loop itself never stopped.
        await produce(settings.bootstrap, topic, asked(saga, "Pia").to_json())
        await eventually(lambda: caught_up(settings.bootstrap, {participant.name: [topic]}), what="consumed")
        assert [d["type"] for d in for_saga(await downstream.drain(), saga)] == ["FirstDone"]


async def _async(value: bool) -> bool:
    return value
