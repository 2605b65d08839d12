"""A step added to a saga: its own files (tests/toy/third/) and one line of the declaration.

Nothing of the two steps already there changes: the first step's compensator learns from the
declaration that it now also undoes the third step's failure, the saga's events, outcomes and
bounds (``failed_step`` may now name "third") follow, and the whole saga runs on a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Saga, Service, Settings, Step
from engine.broker import kafka
from engine.worker.run import run_participants
from tests.conftest import new_broker
from tests.databases import rows, with_databases
from tests.support import eventually
from tests.toy.events import FIRST, OUTCOMES
from tests.toy.kit import Seen, TopicWatcher, asked, produce
from tests.toy.saga import TOY
from tests.toy.third.events import DONE
from tests.toy.third.handlers import do_third
from tests.toy.third.tables import StampRecords

third = Service("third", StampRecords)
TOY3 = Saga("toy", steps=(*TOY.steps, Step(third, do_third)), compensations=TOY.compensations)


async def ended(watcher: TopicWatcher, saga_ids: list[str], type_: str, timeout: float) -> dict[str, Seen]:
    """The ``type_`` event of each saga id on the watched topic (which carries other events too)."""

    def found() -> dict[str, Seen]:
        return {s: e for s in saga_ids for e in watcher.outcomes.get(s, []) if e.type == type_}

    deadline = asyncio.get_running_loop().time() + timeout
    while len(found()) < len(saga_ids) and asyncio.get_running_loop().time() < deadline:
        await watcher.poll()
    return found()


def test_the_declaration_derives_what_the_new_step_changes() -> None:
    assert [c.__name__ for c in TOY3.outcomes] == ["ThirdDone", "ToyFailed"]
    assert list(TOY3.participants["first.compensations"].handlers) == ["FirstFailed", "SecondFailed", "ThirdFailed"]
    assert TOY3.participants["third"].topics == (OUTCOMES,)  # where the second step's success goes
    assert list(TOY.participants["first.compensations"].handlers) == ["FirstFailed", "SecondFailed"]  # untouched


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with new_broker(tmp_path_factory.mktemp("third") / "broker") as bootstrap:
        asyncio.run(kafka.ensure_topics(bootstrap, TOY3.all_topics(), 3))
        yield bootstrap


async def test_a_third_step_runs_end_to_end_with_the_compensation(
    broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.worker.prepare")
    bound = Settings.for_saga(TOY3)  # the engine's settings, for the saga's three services
    settings = with_databases(bound(kafka_bootstrap_servers=broker, data_dir=tmp_path), "third")
    stop = asyncio.Event()
    running = asyncio.create_task(run_participants(TOY3, TOY3.participants.values(), settings, stop))
    try:
        await eventually(lambda: kafka.groups_stable(broker, TOY3.participants), timeout=90, what="every participant")
        sagas = {"t-ok-1": "Olga", "t-ok-2": "Otto", "t-no-1": "nobody", "t-second-no": "Sid"}
        async with TopicWatcher(broker, DONE) as done, TopicWatcher(broker, OUTCOMES) as outcomes:
            for saga_id, name in sagas.items():
                refuse = saga_id == "t-second-no"  # the second step refuses this one
                await produce(broker, FIRST, asked(saga_id, name, refuse=refuse).to_json(), key=saga_id.encode())
            finished = await done.wait_for(["t-ok-1", "t-ok-2"], timeout=60)
            failed = await ended(outcomes, ["t-no-1", "t-second-no"], "ToyFailed", timeout=60)
            await done.drain()
            await outcomes.drain()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await running
    # Every service starts for the first time: it says so, and warns of no rebuild.
    said = [r for r in caplog.records if r.name == "engine.worker.prepare"]
    assert sorted(r.getMessage().split(":")[0] for r in said if "first start" in r.getMessage()) == [
        "first",
        "second",
        "third",
    ]
    assert not [r.getMessage() for r in said if r.levelno >= logging.WARNING]
    assert {saga: seen.type for saga, seen in finished.items()} == {"t-ok-1": "ThirdDone", "t-ok-2": "ThirdDone"}
    assert sorted(failed) == ["t-no-1", "t-second-no"]
    assert not {s for s, seen in done.outcomes.items() if s in failed}  # one outcome each
    assert not [e for s in finished for e in outcomes.outcomes.get(s, []) if e.type == "ToyFailed"]
    assert failed["t-no-1"].data["failed_step"] == "third" and failed["t-no-1"].data["undone"] == ["first"]
    assert failed["t-second-no"].data["failed_step"] == "second"
    assert rows(settings, "third", "SELECT saga_id FROM stamps ORDER BY saga_id") == [("t-ok-1",), ("t-ok-2",)]
    undone = rows(settings, "first", "SELECT saga_id, outcome FROM marks ORDER BY saga_id")
    assert undone == [("t-no-1", "undone"), ("t-ok-1", "done"), ("t-ok-2", "done"), ("t-second-no", "undone")]
