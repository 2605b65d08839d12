"""The capture saga as one DBOS Transact workflow, on the same kind of database as our bench.

The workflow takes the start event and routes each event to the handler our declaration gives
it, exactly as the topics do in the choreography: the four steps (status, combat, pokeball,
delivery) and, when one fails, the compensations, newest first. Each hop is one DBOS
datasource transaction over the services' own tables (``@ds.transaction()``: the business rows
and DBOS's record of the step's output commit together, its exactly-once), with the handlers
and rules our services run. Same workload, same outcomes; one process and a database, no broker.

Driven as ``concurrency`` threads, each starting a workflow (``DBOS.start_workflow``, the workflow
id = the saga id) and waiting for its result, timed from start to result.
"""

from __future__ import annotations

import resource
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SetWorkflowID, SQLAlchemyDatasource

from bench.load import e2e_figures, workload
from capture.saga import CAPTURE
from capture.settings import Settings
from contracts.events import EVENT_TYPES
from engine.participant import Handler, UnitOfWork
from engine.saga import Service
from engine.wire.envelope import Envelope

# Event type → the service that handles it and how: the steps, then the compensations.
ROUTES: dict[str, tuple[Service, Handler]] = {
    event_type: (participant.service, handler)
    for participants in (CAPTURE.steps, CAPTURE.compensations)
    for participant in participants
    for event_type, handler in participant.handlers.items()
}
OUTCOMES = {outcome.__name__ for outcome in CAPTURE.outcomes}


def _like_ours(dbapi_conn: Any, _record: Any) -> None:
    """DBOS's own SQLite settings (IMMEDIATE transactions, a 30 s busy timeout), in WAL mode with
    ``synchronous=NORMAL`` as our services' databases are: the same durability on both sides."""
    dbapi_conn.isolation_level = "IMMEDIATE"
    for pragma in ("busy_timeout=30000", "foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
        dbapi_conn.execute(f"PRAGMA {pragma}")


def _sqlite(path: Path, **pool: Any) -> tuple[str, sa.Engine]:
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()  # the file, in WAL mode
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url, **pool)
    sa.event.listen(engine, "connect", _like_ours)
    return url, engine


@contextmanager
def databases(settings: Settings, db: str, data: Path) -> Iterator[dict[str, Any]]:
    """The system and application databases, new: SQLite files in ``data``, or two PostgreSQL
    databases beside the status service's (``<its name>_dbos``, ``_dbos_sys``), dropped after."""
    if db == "sqlite":
        data.mkdir(parents=True, exist_ok=True)
        system_url, system_engine = _sqlite(data / "dbos-system.sqlite", pool_size=20, max_overflow=0, pool_timeout=30)
        app_url, app_engine = _sqlite(data / "dbos-app.sqlite")  # DBOS's defaults otherwise
        try:
            yield dict(system_url=system_url, system_engine=system_engine, app_url=app_url, app_engine=app_engine)
        finally:
            system_engine.dispose()
            app_engine.dispose()
        return
    base = sa.make_url(settings.db_url("status"))
    names = [f"{base.database}_dbos"[:63], f"{base.database}_dbos_sys"[:63]]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")

    def drop() -> None:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    try:
        drop()
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        app_url, system_url = (base.set(database=name).render_as_string(hide_password=False) for name in names)
        yield {"system_url": system_url, "system_engine": None, "app_url": app_url, "app_engine": None}
    finally:
        drop()
        admin.dispose()


def capture_workflow(ds: SQLAlchemyDatasource, settings: Settings) -> Callable[[str, str, dict[str, Any]], str]:
    """The saga as a DBOS workflow over ``ds``: one transaction a hop, until an outcome."""

    @ds.transaction()
    def hop(saga_id: str, event_id: str, event_type: str, data: dict[str, Any]) -> list[Any]:
        service, handler = ROUTES[event_type]
        records = service.repository(ds.sql_session().connection())
        uow = UnitOfWork(saga_id=saga_id, event_id=event_id, records=records, settings=settings)
        (published,) = handler(EVENT_TYPES[event_type].model_validate(data), uow)
        return [type(published).__name__, published.model_dump(mode="json")]

    @DBOS.workflow()
    def capture(saga_id: str, event_type: str, data: dict[str, Any]) -> str:
        hops = 0
        while event_type not in OUTCOMES:
            event_type, data = hop(saga_id, f"{saga_id}/{hops}", event_type, data)
            hops += 1
        return event_type

    return capture


def drive(
    capture: Callable[[str, str, dict[str, Any]], str], sagas: list[Envelope], concurrency: int, stop: threading.Event
) -> tuple[list[float], Counter[str], float]:
    """``concurrency`` threads, each starting one workflow and awaiting its result, then the next:
    latencies (start to result), outcomes, elapsed seconds. Once ``stop`` is set, none starts."""
    pending, latencies, outcomes = list(reversed(sagas)), [], Counter[str]()
    lock, failures = threading.Lock(), []

    def worker() -> None:
        while True:
            with lock:
                if not pending or stop.is_set():
                    return
                saga = pending.pop()
            started = time.perf_counter()
            try:
                with SetWorkflowID(saga.sagaid):
                    handle = DBOS.start_workflow(capture, saga.sagaid, saga.type, saga.data)
                outcome = handle.get_result()
            except Exception as error:  # reported once the others are done
                failures.append(error)
                return
            with lock:
                latencies.append(time.perf_counter() - started)
                outcomes[outcome] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, len(sagas)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if stop.is_set():
        raise InterruptedError("the peer's run was stopped")
    if failures:
        raise RuntimeError(f"{len(failures)} DBOS workflows failed; the first: {failures[0]!r}") from failures[0]
    return latencies, outcomes, time.perf_counter() - started


def measure(settings: Settings, options: Any, data: Path, stop: threading.Event | None = None) -> dict[str, Any]:
    """The workload of ``options`` (sagas, warm-up, concurrency, failure mix) as DBOS workflows."""
    stop = stop or threading.Event()
    with databases(settings, options.db, data) as dbs:
        config: DBOSConfig = {
            "name": "pokesaga-peer",
            "system_database_url": dbs["system_url"],
            "system_database_engine": dbs["system_engine"],
            "log_level": "WARNING",
        }
        DBOS(config=config)
        try:
            ds = SQLAlchemyDatasource.create(dbs["app_url"], engine=dbs["app_engine"])
            for service in {step.service.name: step.service for step in CAPTURE.steps}.values():
                service.metadata.create_all(ds.engine)
            capture = capture_workflow(ds, settings)
            DBOS.launch()
            run = str(int(time.time() * 1000))
            concurrency = options.concurrency or 200
            if options.warmup:
                drive(capture, workload(options.warmup, options.failure_mix, f"dbos-w{run}"), concurrency, stop)
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            latencies, outcomes, elapsed = drive(
                capture, workload(options.sagas, options.failure_mix, f"dbos-{run}"), concurrency, stop
            )
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            DBOS.destroy(destroy_registry=True)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "name": "dbos",
        "version": version("dbos"),
        "db": options.db,
        "concurrency": concurrency,
        "sagas": options.sagas,
        "sagas_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "e2e_ms": e2e_figures(latencies),
        "cpu_s": round(cpu, 2),  # the whole process (workflows, DBOS, the driver), timed run only
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # peak, whole process
        "outcomes": dict(outcomes),
    }
