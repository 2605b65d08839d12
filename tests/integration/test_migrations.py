"""The schema is versioned: migrations build exactly the tables the code uses, on SQLite and PostgreSQL.

Two histories in every service database: the engine's own (its tables, its version table) and the
service's (its tables only); a database made before the engine kept its own is upgraded in place."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, Boolean, Engine, Integer, String, insert, inspect, text

from capture.bootstrap import open_database
from capture.processes import settings_env
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from engine.store import migrate
from engine.store.db import METADATA as ENGINE_TABLES
from tests import databases
from tests.e2e.conftest import pokesaga

ROOT = Path(__file__).resolve().parents[2]
NEWEST = "0004 + engine_0004"  # each service's own revision + the engine's
VERSION_TABLES = ("alembic_version", migrate.ENGINE_VERSION_TABLE)


def differences(engine: Engine, service: str) -> list[Any]:
    """What the migrations built against what the models declare: the service's tables and the engine's."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, *_: name not in VERSION_TABLES})
        return compare_metadata(context, migrate.schema(CAPTURE.services[service]))


def test_db_upgrade_builds_every_table_the_code_uses_and_a_second_run_changes_nothing(settings: Settings) -> None:
    upgraded = pokesaga(settings, "db", "upgrade", "all")
    assert upgraded.returncode == 0, upgraded.stderr
    first = [f"{s}: upgraded from nothing at revision {NEWEST} (newest: {NEWEST})" for s in SERVICES]
    assert upgraded.stdout.splitlines() == first
    for service in SERVICES:
        engine = databases.engine(settings, service)
        assert differences(engine, service) == []  # no difference at all
        engine.dispose()
    again = pokesaga(settings, "db", "upgrade", "all")
    assert again.stdout.splitlines() == [f"{s}: already at revision {NEWEST} (newest: {NEWEST})" for s in SERVICES]
    current = pokesaga(settings, "db", "current", "pokeball")
    assert current.stdout.strip() == f"pokeball: at revision {NEWEST} (newest: {NEWEST})"
    # Created empty: marked, in the same transaction, for a rebuild from the topics at start.
    assert databases.rows(settings, "delivery", "select consumer, targets from rebuild") == [("*", None)]


def test_a_service_upgrades_its_database_at_start_and_knows_when_it_was_new(settings: Settings) -> None:
    engine, new = open_database("delivery", settings)
    assert new and migrate.current(engine) == migrate.head(CAPTURE.services["delivery"])
    engine.dispose()
    engine, new = open_database("delivery", settings)
    assert not new
    engine.dispose()


def test_a_database_made_before_migrations_existed_is_adopted(settings: Settings) -> None:
    engine = databases.engine(settings, "combat")
    migrate.revision_0001(CAPTURE.services["combat"]).create_all(engine)  # how the first pokesaga made its tables
    engine, new = open_database("combat", settings)
    assert not new and migrate.revisions(engine) == migrate.Revisions("0004", "engine_0004")
    assert {"alembic_version", "pokesaga_engine_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    # A database in use: not marked for a rebuild.
    assert databases.rows(settings, "combat", "select count(*) from rebuild") == [(0,)]


def test_a_database_in_use_upgraded_from_0001_is_not_rebuilt(settings: Settings) -> None:
    engine = databases.engine(settings, "pokeball")
    with engine.begin() as conn:
        migrate.command.upgrade(migrate.engine_config(conn), "engine_0001")
        migrate.command.upgrade(migrate.config(CAPTURE.services["pokeball"], conn), "0001")
    engine.dispose()
    engine, new = open_database("pokeball", settings)
    assert not new and migrate.revisions(engine) == migrate.Revisions("0004", "engine_0004")
    engine.dispose()
    assert databases.rows(settings, "pokeball", "select count(*) from rebuild") == [(0,)]


def test_a_database_from_an_older_pokesaga_with_other_tables_is_refused_with_what_to_do(settings: Settings) -> None:
    engine = databases.engine(settings, "status")
    with engine.begin() as conn:  # the inbox as it was before received_at existed
        conn.execute(text('CREATE TABLE inbox (consumer VARCHAR(100), event_id VARCHAR(200), "offset" BIGINT)'))
    engine.dispose()
    refused = pokesaga(settings, "db", "upgrade", "status")
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("pokesaga: error: status: the database ")
    assert "differ from revision 0001" in refused.stderr and "pokesaga replay status --to-earliest" in refused.stderr
    with databases.engine(settings, "status").connect() as conn:
        assert not inspect(conn).has_table("alembic_version")  # nothing stamped, nothing changed


def test_an_unreachable_database_is_one_line_and_exit_1(settings: Settings) -> None:
    broken = settings.model_copy(update={"status_db_url": "postgresql+psycopg://nobody:x@127.0.0.1:1/none"})
    result = pokesaga(broken, "db", "upgrade", "status")
    assert result.returncode == 1
    assert result.stderr.startswith("pokesaga: database unavailable: ") and len(result.stderr.splitlines()) == 1


def test_a_database_in_use_keeps_its_positions_through_engine_revision_0003_and_back(settings: Settings) -> None:
    """Upgraded from engine_0002, each consumer's position on each partition comes from its inbox
    rows' coordinates (a replay after the upgrade re-applies nothing); downgraded, they come back."""
    engine = databases.engine(settings, "pokeball")
    with engine.begin() as conn:
        migrate.command.upgrade(migrate.engine_config(conn), "engine_0002")
        rows = [("pokeball", "e1", "s1", "PokemonWeakened", "capture.pokeball", 0, 7, 100.0),
                ("pokeball", "e2", "s2", "PokemonWeakened", "capture.pokeball", 0, 3, 200.5),
                ("pokeball", "dead:capture.pokeball:1:9", "x", "dead_letter", "capture.pokeball", 1, 9, 50.0),
                ("pokeball.compensations", "e3", "s3", "DeliveryFailed", "capture.failures", 2, 0, 10.0)]  # fmt: skip
        for row in rows:
            conn.execute(
                text('INSERT INTO inbox (consumer, event_id, saga_id, type, topic, "partition", "offset", received_at) '
                     "VALUES (:c, :e, :s, :t, :topic, :p, :o, :r)"),
                dict(zip(("c", "e", "s", "t", "topic", "p", "o", "r"), row, strict=True)),
            )  # fmt: skip
        migrate.command.upgrade(migrate.engine_config(conn), "head")
    positions = 'select consumer, topic, "partition", "offset", "timestamp" from positions order by 1, 2, 3'
    assert databases.rows(settings, "pokeball", positions) == [
        ("pokeball", "capture.pokeball", 0, 8, 200500),
        ("pokeball", "capture.pokeball", 1, 10, 50000),
        ("pokeball.compensations", "capture.failures", 2, 1, 10000),
    ]
    assert databases.rows(settings, "pokeball", "select event_id, saga_id, type from inbox order by 1") == [
        ("dead:capture.pokeball:1:9", "x", "dead_letter"), ("e1", "s1", "PokemonWeakened"),
        ("e2", "s2", "PokemonWeakened"), ("e3", "s3", "DeliveryFailed"),
    ]  # fmt: skip
    assert migrate.downgrade(engine, CAPTURE.services["pokeball"], migrate.Revisions(None, "engine_0002")) == (
        migrate.Revisions(None, "engine_0002")
    )
    engine.dispose()
    last = 'select consumer, topic, "partition", max("offset") from inbox group by 1, 2, 3 order by 1, 2, 3'
    assert databases.rows(settings, "pokeball", last) == [
        ("pokeball", "capture.pokeball", 0, 7),
        ("pokeball", "capture.pokeball", 1, 9),
        ("pokeball.compensations", "capture.failures", 2, 0),
    ]
    assert databases.rows(settings, "pokeball", "select count(*) from inbox where saga_id <> ''") == [(4,)]


OLD = "2d17817"  # main before the engine kept its own history: each service's revisions made the engine's tables


@pytest.fixture(scope="module")
def old_pokesaga(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The code of main at OLD, apart from this checkout: what made the databases in use today."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD}^{{commit}}"], capture_output=True).returncode:
        pytest.skip(f"commit {OLD} is not in this checkout's history")
    where = tmp_path_factory.mktemp("old-pokesaga")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


def old(where: Path, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The old pokesaga's CLI, as a user ran it, against the same databases."""
    env = settings_env(settings) | {"PYTHONPATH": str(where)}
    run = [sys.executable, "-m", "capture.cli", *args]
    return subprocess.run(run, cwd=where, env=os.environ | env, capture_output=True, text=True, timeout=120)


# The old pokesaga's migrate, to bring one service's database to an older revision of its own.
TO_REVISION = """
import sys
from capture.saga import CAPTURE
from capture.settings import Settings
from engine import migrate
from engine.db import make_engine
service, revision = sys.argv[1:]
engine = make_engine(Settings().db_url(service))
with engine.begin() as conn:
    migrate.command.upgrade(migrate.config(CAPTURE.services[service], conn), revision)
"""


def a_value(column: Any, n: int) -> Any:
    if isinstance(column.type, Boolean):
        return n % 2 == 0
    if isinstance(column.type, Integer | BigInteger):
        return n
    assert isinstance(column.type, String), column
    return f"v{n}"[: column.type.length]


def fill(settings: Settings) -> None:
    """Rows in every table of every service database, the engine's (written as the old code wrote
    them: their columns are the same) and the service's own."""
    for service in SERVICES:
        engine = databases.engine(settings, service)
        with engine.begin() as conn:
            for n in range(3):
                for table in CAPTURE.services[service].metadata.sorted_tables:
                    conn.execute(insert(table).values({c.name: a_value(c, n) for c in table.columns}))
                consumer = f"{service}-{n}"
                conn.execute(
                    insert(ENGINE_TABLES.tables["inbox"]).values(
                        consumer=consumer, event_id=f"e{n}", saga_id=f"s{n}", type="PokemonCaught", received_at=10.5 + n
                    )
                )
                conn.execute(
                    insert(ENGINE_TABLES.tables["outbox"]).values(
                        producer=service,
                        event_id=f"o{n}",
                        topic="capture.delivery",
                        key=b"k",
                        value=b"v" * n,
                        headers=[["ce_type", "PokemonCaught"]],
                    )
                )
                conn.execute(
                    insert(ENGINE_TABLES.tables["positions"]).values(
                        consumer=consumer,
                        topic="capture.status",
                        partition=n,
                        offset=100 + n,
                        timestamp=5000 + n,
                        topic_id=None if n == 0 else f"id-{n}",
                    )
                )
                conn.execute(
                    insert(ENGINE_TABLES.tables["rebuild"]).values(
                        consumer=consumer,
                        targets={"capture.status:0": 7} if n else None,
                        start=None,
                        replayed=bool(n),
                        since=1.25,
                    )
                )
                conn.execute(insert(ENGINE_TABLES.tables["parked"]).values(
                    consumer=consumer, event_id=f"p{n}", saga_id="s", topic="capture.status", partition=0, offset=n,
                    timestamp=9, key=None, value=b"{}", headers=[], reason="retry", parked_at=3.5, attempts=n,
                    due_at=4.5 + n, last_error="boom"))  # each its saga's head: due  # fmt: skip
        engine.dispose()


def rows(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    return {name: found for name, found in databases.dump(settings).items() if not name.endswith(VERSION_TABLES)}


def test_a_database_made_before_the_engine_kept_its_own_history_upgrades_in_place_and_back(
    settings: Settings, old_pokesaga: Path
) -> None:
    """A database in use, made by main at OLD (the engine's tables made by each service's revisions
    0001-0004), with rows in every table: upgraded with ``pokesaga db upgrade``, it keeps every row,
    the engine's version is stamped where its tables stood, the service keeps its revision. The old
    pokesaga deployed again (a rolled back deploy) finds it as it left it; the engine's history
    goes down and up again over it, keeping the rows it keeps."""
    made = old(old_pokesaga, settings, "db", "upgrade", "all")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [f"{s}: upgraded from nothing at revision 0004 (newest: 0004)" for s in SERVICES]
    for service in SERVICES:  # the old code's databases: no engine version of their own
        assert databases.rows(settings, service, "select count(*) from rebuild") == [(1,)]  # created: marked
    fill(settings)
    before = rows(settings)
    assert all(len(found) == 3 or name.endswith(".rebuild") for name, found in before.items())
    assert {f"{s}.{t}" for s in SERVICES for t in ENGINE_TABLES.tables} < set(before)

    upgraded = pokesaga(settings, "db", "upgrade", "all")
    assert upgraded.returncode == 0, upgraded.stderr
    # Nothing to change but the engine's version, stamped where its tables stood.
    assert upgraded.stdout.splitlines() == [f"{s}: already at revision {NEWEST} (newest: {NEWEST})" for s in SERVICES]
    assert rows(settings) == before  # every row, as it was
    for service in SERVICES:
        engine = databases.engine(settings, service)
        assert differences(engine, service) == []
        engine.dispose()

    # Back: the old pokesaga takes the upgraded databases as they are, and starts on them.
    again = old(old_pokesaga, settings, "db", "upgrade", "all")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{s}: already at revision 0004 (newest: 0004)" for s in SERVICES]
    assert rows(settings) == before

    # And the engine's history down over them (to engine_0002: the inbox takes its coordinates back
    # from the positions) and up again: the inbox's events, the outbox, the parked records stay.
    engine = databases.engine(settings, "delivery")
    service = CAPTURE.services["delivery"]
    assert migrate.downgrade(engine, service, migrate.Revisions("0004", "engine_0002")) == migrate.Revisions(
        "0004", "engine_0002"
    )
    assert not inspect(engine).has_table("positions")
    migrate.upgrade(engine, service)
    engine.dispose()
    after = rows(settings)
    assert set(before["delivery.inbox"]) < set(after["delivery.inbox"])  # and a row per position it had
    for name in before:
        if name not in ("delivery.inbox", "delivery.positions"):  # positions: made anew from the inbox
            assert after[name] == before[name], name


@pytest.mark.parametrize("revision", ["0001", "0002", "0003"])
def test_a_database_left_at_an_older_revision_before_the_engine_kept_its_own_history_upgrades_in_place(
    settings: Settings, old_pokesaga: Path, revision: str
) -> None:
    """The engine's version is read from the engine's tables, whatever revision the service stood at:
    its later revisions run (engine_0003 moves the inbox's coordinates into positions), nothing lost."""
    env = os.environ | settings_env(settings) | {"PYTHONPATH": str(old_pokesaga)}
    made = subprocess.run([sys.executable, "-c", TO_REVISION, "pokeball", revision], cwd=old_pokesaga, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    engine = databases.engine(settings, "pokeball")
    coordinates = revision < "0003"  # the inbox kept each record's topic, partition and offset until 0003
    columns = "consumer, event_id, saga_id, type, received_at" + (
        ', topic, "partition", "offset"' if coordinates else ""
    )
    values = ":c, :e, :s, :t, :r" + (", :topic, 0, :o" if coordinates else "")
    with engine.begin() as conn:
        for n in range(3):
            row = {"c": "pokeball", "e": f"e{n}", "s": f"s{n}", "t": "PokemonWeakened", "r": n + 0.5}
            conn.execute(
                text(f"INSERT INTO inbox ({columns}) VALUES ({values})"),
                row | {"topic": "capture.pokeball", "o": 10 + n},
            )
            conn.execute(text("INSERT INTO bags (trainer, balls) VALUES (:t, :n)"), {"t": f"t{n}", "n": n})
    engine.dispose()

    upgraded = pokesaga(settings, "db", "upgrade", "pokeball")
    assert upgraded.returncode == 0, upgraded.stderr
    stamped = f"{revision} + engine_{revision}"
    assert upgraded.stdout.splitlines() == [
        f"pokeball: upgraded from {stamped} at revision {NEWEST} (newest: {NEWEST})"
    ]
    engine = databases.engine(settings, "pokeball")
    assert differences(engine, "pokeball") == []
    engine.dispose()
    assert databases.rows(settings, "pokeball", "select event_id, saga_id from inbox order by 1") == [
        ("e0", "s0"), ("e1", "s1"), ("e2", "s2")
    ]  # fmt: skip
    assert databases.rows(settings, "pokeball", "select trainer, balls from bags order by 1") == [
        ("t0", 0), ("t1", 1), ("t2", 2)
    ]  # fmt: skip
    if coordinates:  # where the consumer stood: after the last record it applied
        assert databases.rows(settings, "pokeball", 'select "offset" from positions') == [(13,)]
