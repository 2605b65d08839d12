"""A compensation that cannot be applied is not retried for ever in silence: after a bounded
number of attempts (at once when what it would publish can never be valid) it is a dead letter,
its saga is flagged for an operator, and after the fix the documented command finishes it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from capture import views
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import Outcome, TopicWatcher, publish, start_event
from contracts import topics
from contracts.events import PokemonFainted
from engine.local.broker import free_port
from engine.store.db import make_engine
from engine.wire.deadletter import ATTEMPTS_HEADER, REASON_HEADER
from engine.wire.envelope import wrap
from services.status.tables import statuses
from tests.e2e.conftest import Cluster, cluster, pokesaga, produce_raw
from tests.support import eventually, metric_samples, total

ATTEMPTS = 3
DLQ = topics.dead_letters(topics.COMBAT_FAILURES)


@pytest.fixture(scope="module")
def operated(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int]]:
    port = free_port()
    env = {
        "POKESAGA_COMPENSATION_ATTEMPTS": str(ATTEMPTS),
        "POKESAGA_COMPENSATION_RETRY__INITIAL_INTERVAL": "0.05",
        "POKESAGA_COMPENSATION_RETRY__MAXIMUM_INTERVAL": "0.05",
    }
    data = tmp_path_factory.mktemp("operator")
    per_instance = {"status": {"POKESAGA_METRICS_PORT": str(port)}}
    with cluster(kafka_bootstrap, data, per_instance=per_instance, **env) as running:
        yield running, port


def fainted(saga_id: str, trainer: str, undone: list[str]) -> tuple[bytes, bytes]:
    """A PokemonFainted as a client could write it on capture.failures.combat (value, key)."""
    event = PokemonFainted.model_validate(
        {"trainer": {"name": trainer}, "pokemon": {"name": "Rattata", "status": "PARALYZED"}, "reason": "fainted",
         "failed_step": "combat", "detail": "written by hand", "undone": undone}
    )  # fmt: skip
    envelope = wrap(event, saga_id=saga_id, source="any-client", causation_id=f"by-hand-{saga_id}")
    return envelope.to_json(), saga_id.encode()


def headers(record: Any) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in record.headers or ()}


def test_a_compensation_failing_on_its_data_is_dead_lettered_after_bounded_attempts_and_flagged_for_an_operator(
    operated: tuple[Cluster, int],
) -> None:
    running, port = operated
    settings: Settings = running.settings
    bootstrap = settings.bootstrap
    run = uuid.uuid4().hex[:6]
    full, bad, other, electric = (f"op-{kind}-{run}" for kind in ("full", "bad", "other", "electric"))
    # Combat is stopped: the sagas stay where status left them (paralyzed), and the failure events
    # below are the only ones they get.
    running.stop("combat")
    before = metric_samples(port)

    async def scenario() -> tuple[dict[str, list[Any]], dict[str, list[Outcome]], dict[str, list[Outcome]]]:
        async with (
            TopicWatcher(bootstrap, DLQ) as dead,
            TopicWatcher(bootstrap, topics.OUTCOMES) as outcomes,
            TopicWatcher(bootstrap, CAPTURE.retries_topic) as notices,
        ):
            await publish(
                bootstrap, [start_event(s, {"name": f"T-{s}"}, {"name": "Rattata"}) for s in (full, bad, other)]
            )

            async def paralyzed() -> bool:
                return all((views.saga(settings, s)["status"] or {}).get("outcome") == "paralyzed"
                           for s in (full, bad, other))  # fmt: skip

            await eventually(paralyzed, timeout=60, what="status to paralyze the three sagas")
            # Bad data in status's own table: restoring the status of saga `bad` raises ValueError.
            engine = make_engine(settings.db_url("status"))
            try:
                with engine.begin() as conn:
                    conn.execute(update(statuses).where(statuses.c.saga_id == bad).values(previous_status="BOGUS"))
            finally:
                engine.dispose()
            # `full` already lists every step as undone: the CaptureFailed status would publish
            # (one more step undone) can never be valid.
            # `other`'s on capture.failures, where failures went before each service had a topic of
            # its own: still read, so it is undone as any.
            for topic, (value, key) in (
                (topics.COMBAT_FAILURES, fainted(full, f"T-{full}", ["delivery", "pokeball", "combat", "status"])),
                (topics.COMBAT_FAILURES, fainted(bad, f"T-{bad}", [])),
                (topics.FAILURES, fainted(other, f"T-{other}", [])),
            ):
                await produce_raw(bootstrap, topic, value, key)

            async def dead_lettered() -> bool:
                await dead.poll()
                await outcomes.poll()
                return {full, bad} <= dead.outcomes.keys() and other in outcomes.outcomes

            await eventually(dead_lettered, timeout=60, what="both compensations dead-lettered, the other saga done")
            # Another saga, started after the dead letters: when it is done, any retry of theirs
            # due by then would have been published (they were due every 0.05 s).
            await publish(bootstrap, [start_event(electric, {"name": f"T-{electric}"}, {"name": "Pikachu"})])
            await outcomes.wait_for([electric], timeout=60)
            await notices.drain()
            await dead.drain()
            await outcomes.drain()
            letters: dict[str, list[Any]] = {}
            for record in dead.records:
                letters.setdefault((record.key or b"").decode(), []).append(record)
            return letters, outcomes.outcomes, notices.outcomes

    letters, outcomes, notices = asyncio.run(scenario())

    # Exactly one dead letter for each, with the reason and the attempts.
    assert len(letters[full]) == 1 and len(letters[bad]) == 1, letters
    said_full, said_bad = headers(letters[full][0]), headers(letters[bad][0])
    assert said_full[REASON_HEADER] == (
        "compensation_failed: ValidationError: CaptureFailed: undone: "
        "Tuple should have at most 4 items after validation, not 5 after 1 attempt"
    )
    assert said_full[ATTEMPTS_HEADER] == "1"  # no point trying again: dead-lettered at once
    assert said_bad[REASON_HEADER] == (
        f"compensation_failed: ValueError: 'BOGUS' is not a valid Status after {ATTEMPTS} attempts"
    )
    assert said_bad[ATTEMPTS_HEADER] == str(ATTEMPTS)
    # Retried as many times as allowed, and not once more; the other sagas went through.
    tried = [n.data for n in notices.get(bad, []) if n.data["participant"] == "status.compensations"]
    assert [n["attempt"] for n in tried] == list(range(1, ATTEMPTS)), tried
    assert all(n["maximum_attempts"] == ATTEMPTS for n in tried)
    assert notices.get(full, []) == []
    assert full not in outcomes and bad not in outcomes
    (done,) = outcomes[other]
    assert (done.type, done.data["undone"]) == ("CaptureFailed", ["status"])
    (immune,) = outcomes[electric]
    assert (immune.type, immune.data["reason"]) == ("CaptureFailed", "electric_type_immune")

    # Flagged for an operator: the metric, and one line per saga saying what to do.
    after = metric_samples(port)
    flagged = total([after], "pokesaga_sagas_needing_operator_total", participant="status.compensations")
    assert flagged - total([before], "pokesaga_sagas_needing_operator_total", participant="status.compensations") == 2
    log = running.processes["status"].log_path.read_text()
    for saga, said in ((full, said_full), (bad, said_bad)):
        lines = [line for line in log.splitlines() if f"saga {saga} NEEDS AN OPERATOR" in line]
        assert len(lines) == 1, lines
        assert " WARNING " in lines[0]
        assert (
            f"saga {saga} NEEDS AN OPERATOR: status.compensations could not compensate ({said[REASON_HEADER]}); "
            f"once fixed: pokesaga dlq replay {DLQ} --saga {saga}"
        ) in lines[0]

    # The operator fixes the data, then runs the command the log gave: the saga ends, once.
    engine = make_engine(settings.db_url("status"))
    try:
        with engine.begin() as conn:
            conn.execute(update(statuses).where(statuses.c.saga_id == bad).values(previous_status="HEALTHY"))
    finally:
        engine.dispose()

    async def replayed() -> list[Outcome]:
        async with TopicWatcher(bootstrap, topics.OUTCOMES) as watched:
            done = await asyncio.to_thread(pokesaga, settings, "dlq", "replay", DLQ, "--saga", bad)
            assert done.returncode == 0, done.stderr
            assert "1 dead letter" in done.stdout, done.stdout
            await watched.wait_for([bad], timeout=60)
            await watched.drain()
            return watched.outcomes.get(bad, [])

    (ended,) = asyncio.run(replayed())
    assert (ended.type, ended.data["reason"], ended.data["undone"]) == ("CaptureFailed", "fainted", ["status"])
    assert views.saga(settings, bad)["status"]["status"] == "HEALTHY"
