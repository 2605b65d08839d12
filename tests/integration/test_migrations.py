"""The schema is versioned: migrations build exactly the tables the code uses, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from capture.bootstrap import METADATA, open_database
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from engine.store import migrate
from tests import databases
from tests.e2e.conftest import pokesaga


def test_db_upgrade_builds_every_table_the_code_uses_and_a_second_run_changes_nothing(settings: Settings) -> None:
    upgraded = pokesaga(settings, "db", "upgrade", "all")
    assert upgraded.returncode == 0, upgraded.stderr
    first = [f"{s}: upgraded from nothing at revision 0004 (newest: 0004)" for s in SERVICES]
    assert upgraded.stdout.splitlines() == first
    for service in SERVICES:
        engine = databases.engine(settings, service)
        with engine.connect() as conn:
            # What the migrations built and what the models declare: no difference at all.
            assert compare_metadata(MigrationContext.configure(conn), METADATA[service]) == []
        engine.dispose()
    again = pokesaga(settings, "db", "upgrade", "all")
    assert again.stdout.splitlines() == [f"{s}: already at revision 0004 (newest: 0004)" for s in SERVICES]
    current = pokesaga(settings, "db", "current", "pokeball")
    assert current.stdout.strip() == "pokeball: at revision 0004 (newest: 0004)"
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
    assert not new and migrate.current(engine) == "0004"
    assert "alembic_version" in inspect(engine).get_table_names()
    engine.dispose()
    # A database in use: not marked for a rebuild.
    assert databases.rows(settings, "combat", "select count(*) from rebuild") == [(0,)]


def test_a_database_in_use_upgraded_from_0001_is_not_rebuilt(settings: Settings) -> None:
    engine = databases.engine(settings, "pokeball")
    with engine.begin() as conn:
        cfg = migrate.config(CAPTURE.services["pokeball"], conn)
        migrate.command.upgrade(cfg, "0001")
    engine.dispose()
    engine, new = open_database("pokeball", settings)
    assert not new and migrate.current(engine) == "0004"
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


def test_a_database_in_use_keeps_its_positions_through_revision_0003_and_back(settings: Settings) -> None:
    """Upgraded from 0002, each consumer's position on each partition comes from its inbox rows'
    coordinates (a replay after the upgrade re-applies nothing); downgraded, they come back."""
    engine = databases.engine(settings, "pokeball")
    service = CAPTURE.services["pokeball"]
    with engine.begin() as conn:
        migrate.command.upgrade(migrate.config(service, conn), "0002")
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
        migrate.command.upgrade(migrate.config(service, conn), "head")
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
    with engine.begin() as conn:
        migrate.command.downgrade(migrate.config(service, conn), "0002")
    assert migrate.current(engine) == "0002"
    engine.dispose()
    last = 'select consumer, topic, "partition", max("offset") from inbox group by 1, 2, 3 order by 1, 2, 3'
    assert databases.rows(settings, "pokeball", last) == [
        ("pokeball", "capture.pokeball", 0, 7),
        ("pokeball", "capture.pokeball", 1, 9),
        ("pokeball.compensations", "capture.failures", 2, 0),
    ]
    assert databases.rows(settings, "pokeball", "select count(*) from inbox where saga_id <> ''") == [(4,)]
