"""Running the saga's services and their databases: run, db."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from engine.cli import tracking
from engine.cli.common import check_databases, check_port, check_replication, exit_cleanly, run_loop
from engine.cli.verb import Cli, Verb
from engine.settings import Settings


def runnable(cli: Cli) -> str:
    """What ``run`` takes, in words."""
    saga = cli.saga
    alone = ", compensations.SERVICE alone" if saga.compensations else ""
    return f"{'|'.join(saga.services)}{alone}, or tracker (the saga tracker)"


def add_run(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    run = commands.add_parser("run", help="run one service (and its compensator) in the foreground")
    run.add_argument("service", help=runnable(cli))
    return run


def add_db(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    services = tuple(cli.saga.services)
    db = commands.add_parser("db", help="the services' database schemas (versioned, Alembic)")
    db.add_argument(
        "action",
        choices=["upgrade", "current", "revision"],
        help="upgrade to the newest revision, show it, or write the next one from the tables as declared",
    )
    db.add_argument("service", metavar="SERVICE", choices=[*services, "all"], help=f"{', '.join(services)} or all")
    db.add_argument("-m", "--message", default="its tables", help="revision: what the new revision does")
    return db


def cmd_run(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    # Until the loop installs its graceful handler, a stop request means: nothing started yet.
    signal.signal(signal.SIGTERM, exit_cleanly)
    from engine.worker import run

    saga = cli.saga
    if args.service == "tracker":  # the observer: a faust app, not a participant
        check_port(settings.tracker_port, settings.metrics_host, "POKESAGA_TRACKER_PORT")
        internal = tracking.internal_topics(cli)
        return tracking.run(cli, check_replication(cli.with_broker(settings, "run"), saga.all_topics(), internal))
    # A wrong name, a database that cannot open, a port taken: said before any connection to the broker.
    participants = saga.service_of(args.service)
    check_databases(settings, dict.fromkeys(p.service for p in participants), args, create=True)
    check_port(settings.metrics_port, settings.metrics_host, "POKESAGA_METRICS_PORT")
    settings = check_replication(cli.with_broker(settings, "run"), saga.all_topics())
    asked = "uvloop" in settings.model_fields_set
    run_loop(run.serve(saga, args.service, settings), settings.uvloop, asked, settings.kafka_tls)
    signal.signal(signal.SIGTERM, exit_cleanly)  # asyncio restored the default on the way out
    return 0


def cmd_db(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from engine.store import migrate
    from engine.store.db import make_engine

    saga = cli.saga
    services = tuple(saga.services) if args.service == "all" else (args.service,)
    if args.action == "revision":  # from the declaration alone: no database of the service is opened
        for service in services:
            written = migrate.new_revision(saga.services[service], args.message)
            said = f"wrote {written}" if written else "nothing new (its history makes its tables as declared)"
            print(f"{service}: {said}")
        return 0
    check_databases(settings, services, args, create=True)
    for service in services:
        engine = make_engine(settings.db_url(service))
        try:
            newest = migrate.heads(saga.services[service])  # the service's own, and the engine's
            if args.action == "upgrade":
                before, after = migrate.upgrade(engine, saga.services[service])
                change = f"upgraded from {before}" if before != after else "already"
                print(f"{service}: {change} at revision {after} (newest: {newest})")
            else:
                at = migrate.revisions(engine)
                print(f"{service}: at revision {'none (empty database)' if at.empty else at} (newest: {newest})")
        finally:
            engine.dispose()
    return 0


VERBS = {"run": Verb(add_run, cmd_run), "db": Verb(add_db, cmd_db)}
