"""Event ids across sagas, and across an upgrade of how they are derived (issue 21).

A caused event's id derives from its saga, its cause's id and its type. Before, the saga id was
no part of it: a client that chose a start event id another saga had used (once the status
step's inbox had forgotten it) got its saga applied by status, but every event after that carried
the id of the first saga's event of the same type, and combat refused the next one as
``event_id_reused``: half a saga, no compensation, no outcome.

Events already published under the old derivation must keep working once the services run the
new code: in flight on a topic, and as the recorded decisions of a rebuild. The services "before"
are this code with the old derivation put back (tests/e2e/legacy_ids.py), each its own process.
Each test has a broker of its own: a rebuild reads everything on the topics.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capture import views
from capture.processes import ServiceProcess
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from capture.starter import publish, start_event
from contracts import topics
from engine.broker import kafka
from engine.wire.envelope import Envelope, caused_id, legacy_caused_id
from tests import databases
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, GROUPS, Cluster, breaking_free, cluster, pokesaga, supervised
from tests.support import caught_up, eventually

WINDOW_HOURS = str(1e-6)  # 3.6 ms: status forgets an applied event id at its next prune (when it starts)
ROOT = Path(__file__).resolve().parents[2]
SNORLAX = {"name": "Snorlax", "level": 40}  # may break free: with breaking_free(), it does


def capture(saga: str, trainer: str, pokemon: dict[str, Any] | None = None) -> Envelope:
    return start_event(saga, {"name": trainer}, pokemon or {"name": "Caterpie", **CERTAIN})


async def documents(bootstrap: str, names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(topic, document) of every record on ``names``, in offset order per partition."""
    records, _ = await kafka.read_to_end(bootstrap, names)
    return [(r.topic, json.loads(r.value or b"{}")) for r in records]


async def outcomes(bootstrap: str) -> dict[str, list[str]]:
    """Saga id → the types of its outcome records on capture.outcomes."""
    found: dict[str, list[str]] = {}
    for _, doc in await documents(bootstrap, [topics.OUTCOMES]):
        found.setdefault(doc["sagaid"], []).append(doc["type"])
    return found


async def dead_letters(bootstrap: str) -> list[tuple[str, str, str]]:
    """(dead-letter topic, key, reason) of every dead letter of the saga's topics."""
    records, _ = await kafka.read_to_end(bootstrap, [topics.dead_letters(t) for t in CAPTURE.consumed])
    reasons = [dict(r.headers).get("pokesaga.dlq.reason", b"") or b"" for r in records]
    return [(r.topic, (r.key or b"").decode(), reason.decode()) for r, reason in zip(records, reasons, strict=True)]


def ended(bootstrap: str, saga: str) -> Any:
    """A check: the saga has an outcome, or a record of it was dead-lettered (it will have none)."""

    async def check() -> bool:
        return saga in await outcomes(bootstrap) or any(key == saga for _, key, _ in await dead_letters(bootstrap))

    return check


def remembered(settings: Settings, event_id: str) -> list[tuple[Any, ...]]:
    """The sagas the status step's inbox remembers ``event_id`` for."""
    query = "select saga_id from inbox where consumer = 'status' and event_id = :id"
    return databases.rows(settings, "status", query, id=event_id)


SHORT = {"POKESAGA_INBOX_RETENTION_HOURS": WINDOW_HOURS}


@pytest.fixture
def short_window(tmp_path: Path) -> Iterator[Cluster]:
    """The four services on a broker of their own, status remembering event ids for 3.6 ms."""
    with (
        new_broker(tmp_path / "broker") as bootstrap,
        cluster(bootstrap, tmp_path / "services", per_instance={"status": SHORT}) as running,
    ):
        yield running


async def test_a_start_id_repeated_after_the_id_window_gives_each_saga_one_outcome(short_window: Cluster) -> None:
    run = uuid.uuid4().hex[:6]
    start_id = f"client-start-{run}"  # the client's choice, for both sagas
    first = capture(f"first-{run}", f"F-{run}").model_copy(update={"id": start_id})
    second = capture(f"second-{run}", f"S-{run}").model_copy(update={"id": start_id})
    running, bootstrap = short_window, short_window.settings.bootstrap
    await publish(bootstrap, [first])
    await eventually(ended(bootstrap, first.sagaid), timeout=60, what="the first saga's outcome")
    await eventually(lambda: caught_up(bootstrap, GROUPS), timeout=60, what="every group caught up")
    assert remembered(running.settings, start_id) == [(first.sagaid,)]
    next_id = caused_id(first.sagaid, start_id, "PokemonParalyzed")
    query = "select saga_id from inbox where consumer = 'combat' and event_id = :id"
    assert databases.rows(running.settings, "combat", query, id=next_id) == [(first.sagaid,)]  # and keeps it

    # Status prunes its inbox as it starts: the start id is long out of its window by then.
    running.stop("status")
    running.start("status", **SHORT)
    await running.joined()

    async def forgotten() -> bool:
        return remembered(running.settings, start_id) == []

    await eventually(forgotten, timeout=60, what="status's inbox row of the start id pruned")

    await publish(bootstrap, [second])
    await eventually(ended(bootstrap, second.sagaid), timeout=60, what="the second saga's outcome or dead letter")
    await eventually(lambda: caught_up(bootstrap, GROUPS), timeout=60, what="every group caught up")

    assert await dead_letters(bootstrap) == []
    found = await outcomes(bootstrap)
    assert {saga: found.get(saga) for saga in (first.sagaid, second.sagaid)} == {
        first.sagaid: ["PokemonDelivered"],
        second.sagaid: ["PokemonDelivered"],
    }
    assert remembered(running.settings, start_id) == [(second.sagaid,)]
    # Each saga's events have ids of their own, derived from its saga id.
    paralyzed = {
        doc["sagaid"]: doc["id"]
        for _, doc in await documents(bootstrap, [topics.COMBAT])
        if doc["type"] == "PokemonParalyzed"
    }
    assert paralyzed == {s: caused_id(s, start_id, "PokemonParalyzed") for s in (first.sagaid, second.sagaid)}


class Before(ServiceProcess):
    """``pokesaga run TARGET`` as it was before caused ids included the saga id (legacy_ids)."""

    def start(self) -> ServiceProcess:
        self.terminated = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.legacy_ids", "run", self.target],
                env=self.env() | {"PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self


@contextlib.contextmanager
def started_before_the_change(bootstrap: str, data: Path) -> Iterator[Cluster]:
    """The four services as they were before the change, each in its own process, consuming; the
    cluster they are in is upgraded by starting a service again (``Cluster.start``: this code)."""
    settings = Settings(kafka_bootstrap_servers=bootstrap, data_dir=data, **databases.database_urls(data.name))
    running = Cluster(settings, {})
    log_dir = data / "logs"
    for service in SERVICES:
        process = Before(service, settings, log_dir)
        process.log_path = log_dir / f"{service}-before.log"
        running.processes[service] = process.start()
    with supervised(running, log_dir):
        yield running


@pytest.fixture
def before_the_change(tmp_path: Path) -> Iterator[Cluster]:
    with (
        new_broker(tmp_path / "broker") as bootstrap,
        started_before_the_change(bootstrap, tmp_path / "services") as running,
    ):
        yield running


@pytest.mark.sqlite_only  # on PostgreSQL: test_passes, a decision published under an old id is re-applied
async def test_events_in_flight_with_ids_derived_the_old_way_complete_across_an_upgrade(
    before_the_change: Cluster,
) -> None:
    """Sagas run to their outcome on the services before the change, and two more are left
    halfway, their status step applied and their ``PokemonParalyzed`` (an old id) waiting on
    capture.combat; then every service is upgraded. The two complete (one through its
    compensation, applied on status's old record), each with one outcome. Then combat's database
    is lost and rebuilt: its recorded decisions, published under old ids and new, are re-applied
    and none is published again: one event per step and saga on the topics, no dead letter."""
    run = uuid.uuid4().hex[:6]
    trainer = f"U-{run}"
    done = [capture(f"done-{run}", trainer), capture(breaking_free(f"done-free-{run}", SNORLAX), trainer, SNORLAX)]
    halfway = [capture(f"half-{run}", trainer), capture(breaking_free(f"half-free-{run}", SNORLAX), trainer, SNORLAX)]
    everyone = [s.sagaid for s in done + halfway]
    running, bootstrap = before_the_change, before_the_change.settings.bootstrap
    await publish(bootstrap, done)
    for saga in done:
        await eventually(ended(bootstrap, saga.sagaid), timeout=60, what=f"{saga.sagaid}'s outcome (before)")
    running.stop("combat")
    await publish(bootstrap, halfway)

    async def waiting() -> list[dict[str, Any]]:
        wanted = {s.sagaid for s in halfway}
        return [d for _, d in await documents(bootstrap, [topics.COMBAT]) if d["sagaid"] in wanted]

    async def paralyzed() -> bool:
        return len(await waiting()) == len(halfway)

    await eventually(paralyzed, timeout=60, what="the halfway sagas' PokemonParalyzed on capture.combat")
    # What the code before published: the id of the start's cause and the type, no saga id.
    assert sorted(d["id"] for d in await waiting()) == sorted(
        legacy_caused_id(s.id, "PokemonParalyzed") for s in halfway
    )

    # The upgrade: every service stopped, started again on the new code.
    for service in SERVICES:
        if running.processes[service].alive:
            running.stop(service)
    for service in SERVICES:
        running.start(service)
    await running.joined()
    for saga in halfway:
        await eventually(ended(bootstrap, saga.sagaid), timeout=90, what=f"{saga.sagaid}'s outcome (after)")
    await eventually(lambda: caught_up(bootstrap, GROUPS), timeout=60, what="every group caught up")
    found = await outcomes(bootstrap)
    assert {saga: len(found.get(saga, [])) for saga in everyone} == dict.fromkeys(everyone, 1)
    assert [found[s.sagaid] for s in halfway] == [["PokemonDelivered"], ["CaptureFailed"]]
    weakened = {
        d["sagaid"]: (d["id"], d["causationid"])
        for _, d in await documents(bootstrap, [topics.POKEBALL])
        if d["type"] == "PokemonWeakened"
    }
    for saga in halfway:  # combat, upgraded, derived the next id from the old one, with the saga id
        cause = legacy_caused_id(saga.id, "PokemonParalyzed")
        assert weakened[saga.sagaid] == (caused_id(saga.sagaid, cause, "PokemonWeakened"), cause)
    for saga in done:  # published before the upgrade
        cause = legacy_caused_id(saga.id, "PokemonParalyzed")
        assert weakened[saga.sagaid] == (legacy_caused_id(cause, "PokemonWeakened"), cause)
    status_undone = views.saga(running.settings, halfway[1].sagaid)["status"]
    assert status_undone["status"] == status_undone["previous_status"]  # compensated on the old record

    # Combat's database lost and rebuilt from the topics, as the README says.
    state = {saga: views.saga(running.settings, saga)["combat"] for saga in everyone}
    published = sorted(
        (topic, d["sagaid"], d["type"], d["id"])
        for topic, d in await documents(bootstrap, list(CAPTURE.topics))
        if d.get("source", "").startswith("pokesaga/combat")
    )
    assert len(published) == 6  # four PokemonWeakened, two PokemonHealed
    running.stop("combat")
    databases.lose(running.settings, "combat")
    replayed = pokesaga(running.settings, "replay", "combat", "--to-earliest")
    assert replayed.returncode == 0, replayed.stderr
    running.start("combat")
    await running.joined()

    async def rebuilt() -> bool:
        left = databases.rows(
            running.settings, "combat", "select (select count(*) from rebuild) + (select count(*) from parked)"
        )
        return left == [(0,)] and await caught_up(bootstrap, GROUPS)

    await eventually(rebuilt, timeout=120, what="combat rebuilt, nothing parked, every group caught up")
    assert {saga: views.saga(running.settings, saga)["combat"] for saga in everyone} == state
    again = sorted(
        (topic, d["sagaid"], d["type"], d["id"])
        for topic, d in await documents(bootstrap, list(CAPTURE.topics))
        if d.get("source", "").startswith("pokesaga/combat")
    )
    assert again == published  # every recorded decision re-applied, none published again
    assert await dead_letters(bootstrap) == []
    found = await outcomes(bootstrap)
    assert {saga: len(found.get(saga, [])) for saga in everyone} == dict.fromkeys(everyone, 1)
    log = running.processes["combat"].log_path.read_text()
    assert "rebuild: skipped" not in log  # no event of its history taken for one no service writes
    assert "combat: rebuilding: 4 recorded decisions loaded" in log  # the four PokemonWeakened
    assert "combat.compensations: rebuilding: 2 recorded decisions loaded" in log  # the two PokemonHealed
