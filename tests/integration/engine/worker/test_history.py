"""A rebuild's history (engine.worker.history), read from a real topic through ``rebuild.load``
with a small memory cap: every lookup returns exactly the recorded decision (first copies, no
forgery), and what the history holds in memory never passes the cap, however many decisions the
topic holds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from engine.broker import kafka
from engine.wire.envelope import Envelope, wrap
from engine.worker import rebuild
from engine.worker.history import key
from tests.toy.events import FirstDone
from tests.toy.saga import TOY, Settings

DONE = {"name": "Hist"}


async def test_a_history_larger_than_its_cap_is_looked_up_exactly(settings: Settings) -> None:
    cap, count = 40, 3_000
    topic = f"it.{uuid.uuid4().hex[:8]}.history"
    await kafka.ensure_topics(settings.bootstrap, [topic], settings.partitions)
    participant = TOY.participants["first"]
    done = FirstDone.model_validate(DONE)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    expected: dict[str, Envelope] = {}
    records: list[tuple[bytes, bytes]] = []
    for n in range(count):
        saga, cause = f"hist-{n}", f"asked-{n}"
        decision = wrap(done, saga_id=saga, source=participant.source, causation_id=cause, time=at)
        expected[key(saga, cause)] = decision
        records.append((saga.encode(), decision.to_json()))
        if n % 10 == 0:  # published again later (a crash before marking it sent): the first copy counts
            again = decision.model_copy(update={"time": at + timedelta(seconds=1)})
            records.append((saga.encode(), again.to_json()))
        if n % 17 == 0:  # forged: an id that does not derive from its cause
            forged = decision.model_copy(update={"id": f"forged-{n}", "sagaid": "forged"})
            records.append((saga.encode(), forged.to_json()))
        if n % 23 == 0:  # bytes that carry the participant's mark but are no envelope
            records.append((saga.encode(), participant.source.encode() + b" {not json"))
    producer = kafka.producer(settings.bootstrap, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in records])
    finally:
        await producer.stop()

    loaded = await rebuild.load(settings.bootstrap, [participant], [topic], TOY.types, cache=cap)
    history = loaded[participant.name]
    try:
        assert len(history) == count and history.peak <= cap
        causes = [*expected, key("hist-0", "never-recorded"), "asked-0"]  # the last: a cause id alone
        for start in range(0, len(causes), 500):  # as the loop does: a batch's causes, then each record's
            batch = causes[start : start + 500]
            history.prefetch(batch)
            for cause in batch:
                assert list(history.get(cause, ())) == ([expected[cause]] if cause in expected else [])
                assert history.held <= cap
        assert history.peak <= cap
    finally:
        history.close()
    assert history.get(next(iter(expected))) == ()


async def test_records_of_other_sagas_naming_one_cause_never_pile_up_under_it(settings: Settings) -> None:
    """Any client can write records naming any cause: 2,000 decisions of 2,000 made-up sagas, each
    with an id derived as a participant derives it, all naming the victim's cause. Kept with their
    saga, none is the victim's: its lookup reads its one decision, not 2,000 (keyed by the cause
    id alone, the lookup parsed every one of them: a rebuild's memory without bound)."""
    topic = f"it.{uuid.uuid4().hex[:8]}.flood"
    await kafka.ensure_topics(settings.bootstrap, [topic], settings.partitions)
    participant = TOY.participants["first"]
    done = FirstDone.model_validate(DONE)
    cause, victim = "asked-victim", "victim"
    genuine = wrap(done, saga_id=victim, source=participant.source, causation_id=cause)
    forged = [wrap(done, saga_id=f"junk-{n}", source=participant.source, causation_id=cause) for n in range(2_000)]
    producer = kafka.producer(settings.bootstrap, linger_ms=5)
    await producer.start()
    try:
        records = [genuine, *forged]
        await asyncio.gather(*[await producer.send(topic, e.to_json(), key=e.sagaid.encode()) for e in records])
    finally:
        await producer.stop()

    history = (await rebuild.load(settings.bootstrap, [participant], [topic], TOY.types, cache=40))[participant.name]
    try:
        assert list(history.get(key(victim, cause))) == [genuine]
        assert history.held <= 40 and history.held_bytes < 20_000, (history.held, history.held_bytes)
        assert list(history.get(key("junk-7", cause))) == [forged[7]]  # each kept with its own saga
    finally:
        history.close()


async def test_a_decision_written_on_another_topic_or_under_another_key_is_no_decision(settings: Settings) -> None:
    """A participant publishes a decision on its type's topic, keyed with its saga. A copy written
    anywhere else — a start topic any client may write, with the id derived as a participant
    derives it — is not taken for one (it was: the participant re-applied the forged decision and
    published nothing, its saga stuck for good)."""
    elsewhere = f"it.{uuid.uuid4().hex[:8]}.elsewhere"
    await kafka.ensure_topics(settings.bootstrap, [elsewhere], settings.partitions)
    participant = TOY.participants["first"]
    done = FirstDone.model_validate(DONE)
    forged = wrap(done, saga_id="victim", source=participant.source, causation_id="asked-victim")
    mis_keyed = wrap(done, saga_id="other", source=participant.source, causation_id="asked-other")
    producer = kafka.producer(settings.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(elsewhere, forged.to_json(), key=b"victim")
        await producer.send_and_wait(elsewhere, mis_keyed.to_json(), key=b"not-other")
    finally:
        await producer.stop()
    own = TOY.types["FirstDone"].topic  # read too, as a rebuild reads every saga topic
    loaded = await rebuild.load(settings.bootstrap, [participant], [elsewhere, own], TOY.types)
    history = loaded[participant.name]
    try:
        assert history.get(key("victim", "asked-victim")) == ()
        assert history.get(key("other", "asked-other")) == ()
    finally:
        history.close()
