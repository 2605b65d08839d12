"""Running the services and their databases: run, db."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from capture.cli.common import (
    Usage,
    check_databases,
    check_port,
    check_replication,
    cut,
    exit_cleanly,
    run_loop,
    with_broker,
)
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings


def add(commands: Any) -> None:
    """Add this group's commands to the parser's subcommands."""
    run = commands.add_parser("run", help="run one service (and its compensator) in the foreground")
    run.add_argument(
        "service", help="status|combat|pokeball|delivery, compensations.SERVICE alone, or tracker (the saga tracker)"
    )

    db = commands.add_parser("db", help="the services' database schemas (versioned, Alembic)")
    db.add_argument("action", choices=["upgrade", "current"], help="upgrade to the newest revision, or show it")
    db.add_argument("service", metavar="SERVICE", choices=[*SERVICES, "all"], help=f"{', '.join(SERVICES)} or all")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    # Until the loop installs its graceful handler, a stop request means: nothing started yet.
    signal.signal(signal.SIGTERM, exit_cleanly)
    from capture import bootstrap

    if args.service == "tracker":  # the observer: a faust app, not a participant
        from capture.tracking import DISPLAY
        from engine.tracker.app import run
        from engine.tracker.tracking import internal_topics

        check_port(settings.tracker_port, settings.metrics_host, "POKESAGA_TRACKER_PORT")
        settings = check_replication(with_broker(settings, "run"), CAPTURE.all_topics(), internal_topics(CAPTURE))
        return run(CAPTURE, settings, DISPLAY)
    if args.service.startswith("null-relay."):  # the bench's passthrough chain
        check_port(settings.metrics_port, settings.metrics_host, "POKESAGA_METRICS_PORT")
        return run_relay(args.service, with_broker(settings, "run"))
    # A wrong name, a database that cannot open, a port taken: said before any connection to the broker.
    participants = bootstrap.resolve(args.service)
    check_databases(settings, dict.fromkeys(p.service for p in participants), args, create=True)
    check_port(settings.metrics_port, settings.metrics_host, "POKESAGA_METRICS_PORT")
    settings = check_replication(with_broker(settings, "run"), CAPTURE.all_topics())
    run_loop(bootstrap.serve(args.service, settings), settings.uvloop, "uvloop" in settings.model_fields_set)
    signal.signal(signal.SIGTERM, exit_cleanly)  # asyncio restored the default on the way out
    return 0


def run_relay(target: str, settings: Settings) -> int:
    from devtools.relay import CHAIN, run_chain
    from engine.observe import health

    hop = target.removeprefix("null-relay.")
    if not (hop.isdigit() and hop.isascii()) or len(hop) > 6 or int(hop) >= len(CHAIN) - 1:
        last = len(CHAIN) - 2
        raise Usage(f"pokesaga run: unknown relay {cut(target)!r}; expected null-relay.0 .. null-relay.{last}")

    async def go() -> None:
        health.serve_http(settings.metrics_port, settings.metrics_host)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await run_chain(settings.bootstrap, int(hop), stop)

    asyncio.run(go())
    signal.signal(signal.SIGTERM, exit_cleanly)
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from engine.store import migrate
    from engine.store.db import make_engine

    services = SERVICES if args.service == "all" else (args.service,)
    check_databases(settings, services, args, create=True)
    for service in services:
        engine = make_engine(settings.db_url(service))
        try:
            newest = migrate.heads(CAPTURE.services[service])  # the service's own, and the engine's
            if args.action == "upgrade":
                before, after = migrate.upgrade(engine, CAPTURE.services[service])
                change = f"upgraded from {before}" if before != after else "already"
                print(f"{service}: {change} at revision {after} (newest: {newest})")
            else:
                at = migrate.revisions(engine)
                print(f"{service}: at revision {'none (empty database)' if at.empty else at} (newest: {newest})")
        finally:
            engine.dispose()
    return 0


COMMANDS = {"run": cmd_run, "db": cmd_db}
