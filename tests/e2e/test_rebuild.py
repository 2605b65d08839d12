"""A lost (or restored) database rebuilt while captures queue: every way of starting the rebuild.

The services run with room for ten Pokémon per trainer and enough balls, and the captures that
queue during the outage are the same trainers' as the ones before it: decided on a half-rebuilt
state, a queued capture takes a slot a recorded one is about to take back, and a saga gets two
outcomes. Rebuilt as it must be, the state is the state before the loss plus the queued sagas'
effects, and every saga has exactly one outcome.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from capture import views
from capture.saga import CAPTURE
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine.broker import kafka
from engine.ops import offsets
from engine.wire.envelope import Envelope
from engine.worker import prepare
from tests import databases
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, GROUPS, Cluster, cluster, pokesaga
from tests.e2e.test_recovery import run_to_the_end
from tests.support import caught_up, eventually


@pytest.fixture(scope="module")
def rebuilds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A broker of its own: a rebuild reads everything on the topics."""
    data = tmp_path_factory.mktemp("rebuild")
    with (
        new_broker(data / "broker") as bootstrap,
        cluster(
            bootstrap,
            data,
            POKESAGA_REBUILD_NEW_DATABASES="true",
            POKESAGA_PARTY_SIZE="3",
            POKESAGA_PC_CAPACITY="10",
            POKESAGA_STARTER_BALLS="40",
        ) as running,
    ):
        yield running


def captures(trainers: list[str], label: str, each: int) -> list[Envelope]:
    """``each`` captures per trainer, one in four of a Pokémon that may break free (a compensation)."""
    found = []
    for i in range(each):
        for name in trainers:
            pokemon = {"name": "Caterpie", **CERTAIN} if i % 4 else {"name": "Snorlax", "level": 40}
            found.append(start_event(f"{name}-{label}{i}", {"name": name}, pokemon))
    return found


def instances(running: Cluster, service: str) -> list[str]:
    return [name for name in running.processes if name.split("#")[0] == service and running.processes[name].alive]


def others(service: str) -> dict[str, list[str]]:
    """The consumer groups of every other service: what must have caught up for captures to queue."""
    return {group: t for group, t in GROUPS.items() if group.split(".")[0] != service}


async def rebuilt(running: Cluster, service: str) -> bool:
    left = databases.rows(
        running.settings, service, "select (select count(*) from rebuild) + (select count(*) from parked)"
    )
    return left == [(0,)] and await caught_up(running.settings.bootstrap, GROUPS)


async def outage(
    running: Cluster,
    service: str,
    lose: Callable[[], None],
    restart: Callable[[], Awaitable[None]],
    before_restart: Callable[[], Awaitable[None]] | None = None,
    stopped: bool = True,
) -> None:
    """Captures, then ``service`` stopped and its state lost (``lose``), captures queued, then
    ``restart``: checks exactly one outcome per saga, the earlier sagas as they were, the queued applied."""
    run = uuid.uuid4().hex[:6]
    trainers = [f"R{t}-{run}" for t in range(2)]
    earlier, queued = captures(trainers, "a", 6), captures(trainers, "q", 4)
    first = await run_to_the_end(running, earlier)
    assert first.keys() == {s.sagaid for s in earlier} and all(len(ids) == 1 for ids in first.values())
    before = {s.sagaid: views.saga(running.settings, s.sagaid) for s in earlier}

    for name in instances(running, service) if stopped else ():
        running.stop(name)
    lose()
    everyone = {s.sagaid for s in earlier + queued}
    async with TopicWatcher(running.settings.bootstrap, topics.OUTCOMES) as outcomes:
        await publish(running.settings.bootstrap, queued)
        await eventually(lambda: caught_up(running.settings.bootstrap, others(service)), timeout=60, what="queued")
        if before_restart is not None:
            await before_restart()
        await restart()

        async def finished() -> bool:
            await outcomes.poll()
            return {s.sagaid for s in queued} <= outcomes.outcomes.keys()

        await eventually(finished, timeout=120, what="an outcome for every queued saga")
        await eventually(lambda: rebuilt(running, service), timeout=120, what="the rebuild over, nothing parked")

    # Exactly one outcome per saga, on the topic from the first record: a re-published one has its id.
    records, _ = await kafka.read_to_end(running.settings.bootstrap, [topics.OUTCOMES])
    found: dict[str, set[tuple[str, str]]] = {}
    for record in records:
        doc = json.loads(record.value)
        if doc["sagaid"] in everyone:
            found.setdefault(doc["sagaid"], set()).add((doc["id"], doc["type"]))
    assert {saga: sorted(found.get(saga, ())) for saga in everyone if len(found.get(saga, ())) != 1} == {}
    assert {saga: {i for i, _ in found[saga]} for saga in first} == first
    # The earlier sagas, service by service, as they were before the loss.
    assert {s.sagaid: views.saga(running.settings, s.sagaid) for s in earlier} == before
    # The queued sagas applied on the rebuilt state: each delivered one holds a slot of its own.
    delivered = {saga for saga, ((_, type_),) in found.items() if type_ == "PokemonDelivered"}
    held = []
    for trainer in trainers:
        view = views.trainer(running.settings, trainer)
        held += [
            (trainer, r["saga_id"], r["location"], r["slot"])
            for r in view["delivery"]["party"] + view["delivery"]["pc"]
        ]
    assert sorted(saga for _, saga, _, _ in held) == sorted(delivered)
    assert len({(t, loc, slot) for t, _, loc, slot in held}) == len(held)
    assert all(views.saga(running.settings, s.sagaid)["status"] is not None for s in queued)


def start(running: Cluster, *names: str, **env: str) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        for name in names:
            running.start(name, **env)
        await running.joined()

    return go


def replay_then_start(running: Cluster, service: str, *args: str) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        replayed = pokesaga(running.settings, "replay", service, *(args or ("--to-earliest",)))
        assert replayed.returncode == 0, replayed.stderr
        await start(running, service)()

    return go


async def test_a_database_lost_while_its_service_runs_is_rebuilt_without_a_restart(rebuilds: Cluster) -> None:
    """Deleted (SQLite) or dropped and created again (PostgreSQL) under the running service, step
    and compensator: it notices, leaves its groups, and rebuilds as if it had been restarted."""

    async def nothing() -> None:
        pass

    await outage(rebuilds, "combat", lambda: databases.lose(rebuilds.settings, "combat"), nothing, stopped=False)
    log = rebuilds.processes["combat"].log_path.read_text()
    assert "combat: its database" in log and "starting its rebuild" in log


@pytest.mark.parametrize(  # on PostgreSQL, pokeball's: the others' rebuild through the same code
    "service", [pytest.param("status", marks=pytest.mark.sqlite_only),
                pytest.param("combat", marks=pytest.mark.sqlite_only), "pokeball",
                pytest.param("delivery", marks=pytest.mark.sqlite_only)]
)  # fmt: skip
async def test_a_lost_database_is_rebuilt_while_captures_queue(rebuilds: Cluster, service: str) -> None:
    """As the README says: stop, lose, ``pokesaga replay SERVICE --to-earliest``, start."""
    await outage(
        rebuilds, service, lambda: databases.lose(rebuilds.settings, service), replay_then_start(rebuilds, service)
    )


async def test_a_lost_database_is_rebuilt_when_it_was_upgraded_before_the_start(rebuilds: Cluster) -> None:
    """``pokesaga db upgrade`` creates the tables first; no replay: the service rewinds itself."""

    def lose_and_upgrade() -> None:
        databases.lose(rebuilds.settings, "delivery")
        upgraded = pokesaga(rebuilds.settings, "db", "upgrade", "delivery")
        assert upgraded.returncode == 0, upgraded.stderr

    await outage(rebuilds, "delivery", lose_and_upgrade, start(rebuilds, "delivery"))


async def test_two_instances_starting_together_share_one_rebuild(rebuilds: Cluster) -> None:
    await outage(
        rebuilds,
        "pokeball",
        lambda: databases.lose(rebuilds.settings, "pokeball"),
        start(rebuilds, "pokeball", "pokeball#2"),
    )
    rebuilds.stop("pokeball#2")


async def test_a_rebuild_interrupted_by_a_crash_carries_on_after_the_restart(rebuilds: Cluster) -> None:
    """The first batch of the rebuild is committed, then the process dies (SIGKILL at the crash
    point); the restarted service carries the rebuild on from the database's rows."""

    async def crash_then_start() -> None:
        crashing = rebuilds.start("delivery", POKESAGA_CRASH_AT="after-local-commit")

        async def crashed() -> bool:
            return not crashing.alive

        await eventually(crashed, timeout=90, what="the crash in the middle of the rebuild")
        assert databases.rows(rebuilds.settings, "delivery", "select count(*) from rebuild") == [(1,)]
        await start(rebuilds, "delivery")()

    await outage(rebuilds, "delivery", lambda: databases.lose(rebuilds.settings, "delivery"), crash_then_start)


async def test_a_compensator_started_alone_waits_for_its_steps_rebuild(rebuilds: Cluster) -> None:
    """``pokesaga run compensations.status`` before the step: it replays nothing until the step has."""

    async def compensator_first() -> None:
        replayed = pokesaga(rebuilds.settings, "replay", "status", "--to-earliest")
        assert replayed.returncode == 0, replayed.stderr
        alone = rebuilds.start("compensations.status")

        async def waiting() -> bool:
            return "waiting for status to replay its history first" in alone.log_path.read_text()

        await eventually(waiting, timeout=60, what="the compensator waiting for its step")
        applied = "select count(*) from inbox where consumer = 'status.compensations'"
        assert databases.rows(rebuilds.settings, "status", applied) == [(0,)]
        await start(rebuilds, "status")()

    await outage(rebuilds, "status", lambda: databases.lose(rebuilds.settings, "status"), compensator_first)
    rebuilds.stop("compensations.status")


async def test_a_database_restored_from_a_backup_is_rebuilt_by_replay_to_its_datetime(
    rebuilds: Cluster, tmp_path: Path
) -> None:
    """Back up, carry on (more sagas decided), lose the database, restore the backup, then
    ``pokesaga replay SERVICE --to-datetime`` the time of the backup, and start."""
    service, backup = "pokeball", tmp_path / "backup"
    for name in instances(rebuilds, service):
        rebuilds.stop(name)
    taken = datetime.now(UTC)
    _copy(rebuilds, service, backup)
    await start(rebuilds, service)()
    later = captures([f"B-{uuid.uuid4().hex[:6]}"], "b", 4)
    decided = await run_to_the_end(rebuilds, later)
    decided_views = {s.sagaid: views.saga(rebuilds.settings, s.sagaid) for s in later}

    def restore() -> None:
        databases.lose(rebuilds.settings, service)
        _copy(rebuilds, service, backup, back=True)

    async def checked_after() -> None:
        assert {s.sagaid: views.saga(rebuilds.settings, s.sagaid)[service] for s in later} == dict.fromkeys(
            decided, None
        )  # the restored database has not seen them

    await outage(
        rebuilds,
        service,
        restore,
        replay_then_start(rebuilds, service, "--to-datetime", taken.isoformat()),
        before_restart=checked_after,
    )
    assert {s.sagaid: views.saga(rebuilds.settings, s.sagaid) for s in later} == decided_views


def _copy(running: Cluster, service: str, backup: Path, back: bool = False) -> None:
    """A backup of the stopped service's database (its files; on PostgreSQL a copy by template), or back."""
    url = make_url(running.settings.db_url(service))
    if url.get_backend_name() != "sqlite":
        databases.copy_database(url.database or "", f"{url.database}_backup", back=back)
        return
    backup.mkdir(exist_ok=True)
    live = Path(url.database or "")
    for suffix in ("", "-wal", "-shm"):
        source, target = (backup / f"db{suffix}", Path(f"{live}{suffix}"))
        if not back:
            source, target = target, source
        if source.exists():
            shutil.copyfile(source, target)


async def test_a_replay_interrupted_before_it_moved_the_offsets_is_finished_by_the_service(rebuilds: Cluster) -> None:
    """The rebuild is marked with where it re-reads from before the offsets move: if the replay
    stops there (a crash, Ctrl-C), the service moves its group itself. And a database created empty
    can only be rebuilt from the earliest records: a replay to a later time is refused."""

    async def interrupted_replay_then_start() -> None:
        refused = pokesaga(rebuilds.settings, "replay", "delivery", "--to-datetime", datetime.now(UTC).isoformat())
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "only --to-earliest can rebuild it" in refused.stderr
        participants = [CAPTURE.participants["delivery"]]
        moves = await offsets.plan_reset(rebuilds.settings.bootstrap, participants, earliest=True)
        await prepare.begin_rebuild(CAPTURE, moves, rebuilds.settings, earliest=True)  # and no offsets.reset
        await start(rebuilds, "delivery")()

    await outage(
        rebuilds, "delivery", lambda: databases.lose(rebuilds.settings, "delivery"), interrupted_replay_then_start
    )


@pytest.mark.skipif(databases.BACKEND != "sqlite", reason="a PostgreSQL database restored in place looks the same")
async def test_a_database_file_restored_under_its_running_service_rebuilds_what_it_missed(
    rebuilds: Cluster, tmp_path: Path
) -> None:
    """A backup put back while the service runs: it notices the file changed, and re-reads every
    partition from after the last record the restored database had applied."""
    service, backup = "pokeball", tmp_path / "backup"
    for name in instances(rebuilds, service):
        rebuilds.stop(name)
    _copy(rebuilds, service, backup)
    await start(rebuilds, service)()

    def restore_in_place() -> None:
        live = Path(make_url(rebuilds.settings.db_url(service)).database or "")
        for suffix in ("-wal", "-shm"):  # the restored file alone, as a restore tool leaves it
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        staged = live.with_suffix(".restoring")
        shutil.copyfile(backup / "db", staged)
        staged.replace(live)  # atomically, under the running service

    async def nothing() -> None:
        pass

    await outage(rebuilds, service, restore_in_place, nothing, stopped=False)
    log = rebuilds.processes[service].log_path.read_text()
    assert "restored from a backup: rebuilding what it missed" in log
