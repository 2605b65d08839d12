"""The ``pokesaga`` command line. Flags mirror the environment; a flag overrides both."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from contracts import jsonschema, pokedex
from contracts.events import Status
from devtools.broker import BrokerError, LocalKafka, provisioned
from engine.health import PortUnavailable
from engine.migrate import SchemaMismatch
from engine.settings import mask_password


class Usage(Exception):
    """A wrong argument: one line, exit code 2."""


class Misconfigured(Exception):
    """A setting that cannot work: one line naming it and what to do. Exit code 2 when the
    value itself is wrong, 1 when what it names is unavailable (a port taken, a server down)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Usage(f"{self.prog}: {message}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date-time like 2026-11-23T10:00:00Z, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_parser() -> Parser:
    parser = Parser(prog="pokesaga", description="A choreographed capture saga over Apache Kafka.")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--data-dir", help="where the SQLite files live (env POKESAGA_DATA_DIR)")
    parser.add_argument("--partitions", type=_positive, help="partitions per topic (env POKESAGA_PARTITIONS)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    start = commands.add_parser("start", help="publish a PokemonEncountered start event; print the saga id")
    start.add_argument("--pokemon", default="Pidgey", help="species name, e.g. Mewtwo (default Pidgey)")
    start.add_argument("--trainer", default="Sacha", help="trainer name (default Sacha)")
    start.add_argument("--level", type=_positive)
    start.add_argument("--hp", type=_positive)
    start.add_argument("--max-hp", type=_positive)
    start.add_argument("--status", choices=[s.value for s in Status])
    start.add_argument("--lead", default="Pikachu", help="the trainer's lead Pokémon (default Pikachu)")
    start.add_argument("--lead-level", type=_positive, default=60)
    start.add_argument("--saga-id", help="default: a new UUID")
    start.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to --wait (default 60)")

    run = commands.add_parser("run", help="run one service (and its compensator) in the foreground")
    run.add_argument(
        "service", help="status|combat|pokeball|delivery, compensations.SERVICE alone, or tracker (the saga tracker)"
    )

    demo = commands.add_parser("demo", help="the whole saga: broker, four services, N captures, summary")
    demo.add_argument("--sagas", type=_positive, default=40, help="captures to start (default 40)")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for outcomes")
    demo.add_argument("--seed", type=_positive, help="seed of the demo's mix of captures")
    demo.add_argument("--keep", action="store_true", help="keep the services and the tracker running until Ctrl-C")

    inspect = commands.add_parser("inspect", help="read-only view of each service's local state")
    what = inspect.add_subparsers(dest="what", required=True, parser_class=Parser)
    for name, helptext in (("trainer", "a trainer's bag, party, PC and sagas"), ("saga", "one saga, per service")):
        sub = what.add_parser(name, help=helptext)
        sub.add_argument("key", metavar="NAME" if name == "trainer" else "ID")
        sub.add_argument("--json", action="store_true", help="machine-readable output")

    broker = commands.add_parser("kafka", help="the local broker (Apache Kafka jars, KRaft, loopback)")
    broker.add_argument("action", choices=["start", "stop", "status"])

    bench = commands.add_parser("bench", help="the services under load (and the null-relay ceiling); one JSON line")
    bench.add_argument("--sagas", type=_positive, default=2000, help="sagas to time (default 2000)")
    load = bench.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_positive, default=200, help="sagas in flight (default 200)")
    load.add_argument("--rate", type=float, help="sagas started per second, instead of a concurrency")
    bench.add_argument("--instances", type=_positive, default=1, help="processes per service (default 1)")
    bench.add_argument(
        "--partitions", dest="bench_partitions", type=_positive, help="partitions per topic (default: the setting, 3)"
    )
    bench.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    bench.add_argument("--failure-mix", type=float, default=0.0, help="share of sagas that fail (0..1)")
    bench.add_argument("--warmup", type=_positive, default=100, help="sagas run first and not timed")
    bench.add_argument("--null-relay", action="store_true", help="only the passthrough chain: the ceiling")
    bench.add_argument("--compare-null", action="store_true", help="also the null relay, and the ratio")

    replay = commands.add_parser("replay", help="move a stopped service's offsets back, to reprocess on restart")
    replay.add_argument(
        "service", help="status|combat|pokeball|delivery (with its compensator), or compensations.SERVICE"
    )
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-earliest", action="store_true", help="the start of each partition")
    where.add_argument("--to-datetime", type=_datetime, metavar="ISO", help="the first record at or after ISO")
    where.add_argument("--to-offset", type=_positive, metavar="N", help="offset N of each partition")
    replay.add_argument("--dry-run", action="store_true", help="print the plan per partition, change nothing")

    dlq = commands.add_parser("dlq", help="dead letters: list them, or re-publish them after a fix")
    dlq_actions = dlq.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = dlq_actions.add_parser("list", help="what is in TOPIC.dlq, with reasons")
    listing.add_argument("topic", metavar="TOPIC", help="e.g. capture.status (or capture.status.dlq)")
    listing.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    replaying = dlq_actions.add_parser("replay", help="re-publish TOPIC.dlq to its source topic")
    replaying.add_argument("topic", metavar="TOPIC")
    replaying.add_argument("--dry-run", action="store_true", help="show what would be re-published")
    replaying.add_argument("--saga", help="only the dead letters of this saga id (record key)")
    replaying.add_argument("--reason", help="only dead letters whose reason contains this text")

    trace = commands.add_parser("trace", help="one saga's timeline, read from the topics (no tracker needed)")
    trace.add_argument("saga_id", metavar="SAGA_ID")
    trace.add_argument("--json", action="store_true", help="the timeline as JSON, as the tracker serves it")

    db = commands.add_parser("db", help="the services' database schemas (versioned, Alembic)")
    db.add_argument("action", choices=["upgrade", "current"], help="upgrade to the newest revision, or show it")
    db.add_argument("service", metavar="SERVICE", choices=[*SERVICES, "all"], help=f"{', '.join(SERVICES)} or all")

    schemas = commands.add_parser("schemas", help="JSON Schemas of the envelope and events")
    schemas.add_argument("action", choices=["export"])

    docs = commands.add_parser("docs", help="draw the choreography from the declaration: Mermaid and AsyncAPI")
    docs.add_argument("--output", metavar="DIR", help="where to write them (default: docs/ of the checkout)")
    return parser


# The settings a global flag can give, and the flag: an error then names the flag.
FLAGS = {"kafka_bootstrap_servers": "--bootstrap-servers", "data_dir": "--data-dir", "partitions": "--partitions"}
JSON_EXAMPLES = {
    "retry": '{"maximum_attempts": 10}',
    "compensation_retry": '{"initial_interval": 0.1}',
    "step_retry": '{"pokeball": {"maximum_attempts": 10}}',
}


def setting_name(field: str, args: argparse.Namespace | None = None) -> str:
    """How the user gave the setting ``field``: its flag if one was passed, else its variable."""
    field = "kafka_bootstrap_servers" if field == "KAFKA_BOOTSTRAP_SERVERS" else field
    if args is not None and field in FLAGS and getattr(args, FLAGS[field].lstrip("-").replace("-", "_"), None):
        return FLAGS[field]
    if field == "kafka_bootstrap_servers":
        return "KAFKA_BOOTSTRAP_SERVERS"
    return field if field.isupper() else f"POKESAGA_{field.upper()}"


def describe_invalid(exc: ValidationError, args: argparse.Namespace | None = None) -> str:
    """The first error of invalid settings, as one line naming the setting."""
    error = exc.errors()[0]
    field, *inner = error["loc"] or ("settings",)
    name = setting_name(str(field), args)
    message = error["msg"].removeprefix("Value error, ").removeprefix(f"{name}: ")
    if error["type"] != "value_error" and isinstance(error.get("input"), str | int | float):
        message += f" (got {error['input']!r})"
    where = ".".join(map(str, inner))
    return f"pokesaga: {name}: {where + ': ' if where else ''}{message}"


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.bootstrap_servers:
        overrides["kafka_bootstrap_servers"] = args.bootstrap_servers
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.partitions:
        overrides["partitions"] = args.partitions
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise Misconfigured(describe_invalid(exc, args)) from None
    except SettingsError as exc:  # a value that is not even JSON, e.g. POKESAGA_STEP_RETRY
        found = re.search(r'field "(\w+)"', str(exc))
        field = found[1] if found else "settings"
        example = f"; expected JSON such as {JSON_EXAMPLES[field]}" if field in JSON_EXAMPLES else ""
        raise Misconfigured(
            f"pokesaga: {setting_name(field, args)}: not valid JSON ({exc.__cause__}){example}"
        ) from None


def check_databases(settings: Settings, services: Iterable[str], args: argparse.Namespace, create: bool) -> None:
    """Each service's database can be opened, before any broker connection; else one line
    naming the setting. ``create``: the command will create SQLite files (run, db); inspect
    never creates a database just to look at it, so it only checks servers."""
    from engine.db import make_engine

    for service in services:
        url = settings.db_url(service)
        override = getattr(settings, f"{service}_db_url")
        name = f"POKESAGA_{service.upper()}_DB_URL" if override else setting_name("data_dir", args)
        sqlite = make_url(url).get_backend_name() == "sqlite"
        if sqlite and not override:
            check_data_dir(settings.data_dir, name, create)
        if sqlite and not create:
            continue
        # libpq waits for an unreachable host as long as TCP does: bound it
        postgres = make_url(url).get_dialect().driver in ("psycopg", "psycopg2")
        try:
            engine = make_engine(url, **({"connect_args": {"connect_timeout": 10}} if postgres else {}))
        except OSError as exc:  # the folder of a SQLite file given by URL
            raise Misconfigured(f"pokesaga: {name}: cannot create {exc.filename}: {exc.strerror or exc}", 1) from None
        try:
            with engine.connect():
                pass
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            raise Misconfigured(
                f"pokesaga: database unavailable: {name} ({mask_password(url)}): {reason}; is the server running?", 1
            ) from None
        finally:
            engine.dispose()


def check_data_dir(path: Path, name: str, create: bool) -> None:
    """The data directory exists (``create``: can be created) and is writable; else one line."""
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise Misconfigured(f"pokesaga: {name}: {path} is a file; choose a folder pokesaga can write", 1) from None
        except OSError as exc:
            raise Misconfigured(
                f"pokesaga: {name}: cannot create {path}: {exc.strerror or exc}; choose a folder pokesaga can write",
                1,
            ) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise Misconfigured(f"pokesaga: {name}: {path} is not writable; choose a folder pokesaga can write", 1)
        return
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == path.absolute() else f"cannot be a folder: {existing} is a file"
        raise Misconfigured(f"pokesaga: {name}: {path} {what}; choose a folder pokesaga can write", 1)


def check_port(port: int | None, host: str, name: str) -> None:
    """Nothing holds ``host:port``, and ``host`` is this machine's (port 0: any free port;
    None: nothing served); else one line naming the setting."""
    if port is None:
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP servers bind
        try:
            sock.bind((host, port))
        except OSError as exc:
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                raise Misconfigured(
                    f"pokesaga: POKESAGA_METRICS_HOST: cannot serve on {host}:{port}: {exc.strerror or exc}"
                    "; expected an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
                    1,
                ) from None
            hint = "another process holds it" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise Misconfigured(
                f"pokesaga: {name}: cannot serve on {host}:{port}: {hint}; choose another port (0: any free one)", 1
            ) from None


def with_broker(settings: Settings, command: str) -> Settings:
    """``settings`` with a bootstrap address: the configured one, else the local broker's."""
    if settings.kafka_bootstrap_servers:
        return settings
    address = LocalKafka(settings.kafka_cache_dir).address()
    if address is None:
        raise Usage(f"pokesaga {command}: no broker: set KAFKA_BOOTSTRAP_SERVERS or run 'pokesaga kafka start'")
    return settings.model_copy(update={"kafka_bootstrap_servers": address})


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    from capture.starter import TopicWatcher, publish, start_event
    from engine import kafka

    if pokedex.lookup(args.pokemon) is None:
        raise Usage(f"pokesaga start: unknown Pokémon {args.pokemon!r} (not among the 151 of the Pokédex)")
    pokemon = {"name": args.pokemon, "level": args.level, "hp": args.hp, "max_hp": args.max_hp, "status": args.status}
    trainer = {"name": args.trainer, "lead": {"name": args.lead, "level": args.lead_level}}
    try:
        envelope = start_event(args.saga_id, trainer, {k: v for k, v in pokemon.items() if v is not None})
    except ValidationError as exc:
        raise Usage(f"pokesaga start: {exc.errors()[0]['msg']}") from None
    settings = with_broker(settings, "start")

    async def go() -> int:
        await kafka.ensure_topics(settings.bootstrap, CAPTURE.all_topics(), settings.partitions, timeout=15)
        if not args.wait:
            await publish(settings.bootstrap, [envelope])
            print(envelope.sagaid)
            return 0
        async with TopicWatcher(settings.bootstrap) as watcher:
            await publish(settings.bootstrap, [envelope])
            print(envelope.sagaid, flush=True)
            outcome = (await watcher.wait_for([envelope.sagaid], args.timeout)).get(envelope.sagaid)
        if outcome is None:
            print(
                f"pokesaga: no outcome for saga {envelope.sagaid} within {args.timeout:.0f}s"
                " (are the services running?)",
                file=sys.stderr,
            )
            return 1
        print(f"{outcome.type}: {outcome.detail}")
        return 0

    return asyncio.run(go())


def _run_loop(main: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    """asyncio.run, on uvloop when it is installed and asked for (POKESAGA_UVLOOP)."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            logging.getLogger(__name__).warning("POKESAGA_UVLOOP is set but uvloop is not installed")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    # Until the loop installs its graceful handler, a stop request means: nothing started yet.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    from capture import bootstrap

    if args.service == "tracker":  # the observer: a faust app, not a participant
        from tracker.app import run

        check_port(settings.tracker_port, settings.metrics_host, "POKESAGA_TRACKER_PORT")
        return run(with_broker(settings, "run"))
    if args.service.startswith("null-relay."):  # the bench's passthrough chain
        check_port(settings.metrics_port, settings.metrics_host, "POKESAGA_METRICS_PORT")
        return run_relay(args.service, with_broker(settings, "run"))
    # A wrong name, a database that cannot open, a port taken: said before any connection to the broker.
    participants = bootstrap.resolve(args.service)
    check_databases(settings, dict.fromkeys(p.service for p in participants), args, create=True)
    check_port(settings.metrics_port, settings.metrics_host, "POKESAGA_METRICS_PORT")
    settings = with_broker(settings, "run")
    _run_loop(bootstrap.serve(args.service, settings), settings.uvloop)
    signal.signal(signal.SIGTERM, _exit_cleanly)  # asyncio restored the default on the way out
    return 0


def run_relay(target: str, settings: Settings) -> int:
    from devtools.relay import CHAIN, run_chain
    from engine import health

    hop = target.removeprefix("null-relay.")
    if not hop.isdigit() or int(hop) >= len(CHAIN) - 1:
        raise Usage(f"pokesaga run: unknown relay {target!r}; expected null-relay.0 .. null-relay.{len(CHAIN) - 2}")

    async def go() -> None:
        health.serve(settings.metrics_port, settings.metrics_host)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await run_chain(settings.bootstrap, int(hop), stop)

    asyncio.run(go())
    signal.signal(signal.SIGTERM, _exit_cleanly)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.demo import run_demo

    _stop_on_sigterm()

    with provisioned(settings) as address:
        print(f"broker: {address}", file=sys.stderr)
        settings = settings.model_copy(update={"kafka_bootstrap_servers": address})
        return asyncio.run(run_demo(settings, args.sagas, args.timeout, args.seed, args.keep))


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    from capture import views

    check_databases(settings, SERVICES, args, create=False)
    if args.what == "trainer":
        view = views.trainer(settings, args.key)
        text = views.render_trainer(view)
    else:
        view = views.saga(settings, args.key)
        text = views.render_saga(view)
    print(json.dumps(view, indent=2, sort_keys=True, default=str) if args.json else text)
    return 0


def cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    local = LocalKafka(settings.kafka_cache_dir)
    if args.action == "start":
        address = local.start()
        print(address)
    elif args.action == "stop":
        print("stopped" if local.stop() else "not running")
    else:
        running = local.address()
        if running is None:
            print("not running")
            return 1
        print(running)
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C does: its clean-up (processes, broker) still runs."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.bench import Options, run

    _stop_on_sigterm()

    if not 0 <= args.failure_mix <= 1:
        raise Usage("pokesaga bench: --failure-mix must be within 0..1")
    if args.rate is not None and args.rate <= 0:
        raise Usage("pokesaga bench: --rate must be above 0")
    if args.db == "postgres" and not all(
        getattr(settings, f"{s}_db_url") for s in ("status", "combat", "pokeball", "delivery")
    ):
        raise Usage("pokesaga bench: --db postgres needs POKESAGA_<SERVICE>_DB_URL set for each of the four services")
    options = Options(
        sagas=args.sagas,
        concurrency=None if args.rate else args.concurrency,
        rate=args.rate,
        partitions=args.bench_partitions or args.partitions or settings.partitions,
        instances=max(1, args.instances),
        db=args.db,
        failure_mix=args.failure_mix,
        warmup=args.warmup,
    )
    return run(settings, options, args.null_relay, args.compare_null)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from capture import bootstrap
    from engine import offsets as replay

    participants = bootstrap.resolve(args.service)
    settings = with_broker(settings, "replay")

    async def go() -> int:
        moves = await replay.plan(
            settings.bootstrap, participants, earliest=args.to_earliest, when=args.to_datetime, offset=args.to_offset
        )
        print(f"{'group':<24} {'partition':<22} {'current':>8}    new")
        for move in moves:
            print(move)
        if args.dry_run:
            print(f"dry run: {len(moves)} partitions would be moved; nothing changed")
            return 0
        try:
            await replay.apply(settings.bootstrap, moves)
        except replay.GroupActive as exc:
            print(f"pokesaga replay: {exc}", file=sys.stderr)
            return 1
        print(f"moved {len(moves)} partitions; start {args.service} to reprocess")
        return 0

    return asyncio.run(go())


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from engine import deadletters
    from engine.text import printable

    settings = with_broker(settings, "dlq")
    dlq = deadletters.dlq_topic(args.topic)

    async def go() -> int:
        from engine import kafka

        if dlq not in CAPTURE.all_topics() and not await kafka.topic_exists(settings.bootstrap, dlq):
            raise Usage(f"pokesaga dlq: no topic {dlq!r}")
        if args.action == "list":
            letters = await deadletters.list_dead_letters(settings.bootstrap, dlq)
            for letter in letters:
                if args.json:
                    print(json.dumps(letter.as_dict(), sort_keys=True))
                else:
                    print(f"{letter.partition}:{letter.offset}  key={printable(str(letter.key), 200)}  {letter.reason}")
            if not args.json:
                print(f"{len(letters)} dead letter{'s' * (len(letters) != 1)} in {dlq}")
            return 0
        letters = await deadletters.replay(
            settings.bootstrap, dlq, dry_run=args.dry_run, saga=args.saga, reason=args.reason
        )
        verb = "would re-publish" if args.dry_run else "re-published"
        for letter in letters:
            print(f"{verb} {letter.partition}:{letter.offset} key={printable(str(letter.key), 200)} to {letter.source}")
        print(f"{verb} {len(letters)} dead letter{'s' * (len(letters) != 1)} from {dlq}")
        return 0

    return asyncio.run(go())


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    from tracker.trace import find, render

    settings = with_broker(settings, "trace")
    view = asyncio.run(find(settings.bootstrap, args.saga_id, settings.stuck_after))
    if view is None:
        print(f"pokesaga trace: no event of saga {args.saga_id!r} on the capture topics", file=sys.stderr)
        return 1
    print(json.dumps(view, indent=2) if args.json else render(view))
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from capture.saga import CAPTURE
    from engine import migrate
    from engine.db import make_engine

    services = SERVICES if args.service == "all" else (args.service,)
    check_databases(settings, services, args, create=True)
    for service in services:
        engine = make_engine(settings.db_url(service))
        try:
            newest = migrate.head(CAPTURE.services[service])
            if args.action == "upgrade":
                before, after = migrate.upgrade(engine, CAPTURE.services[service])
                change = f"upgraded from {before or 'nothing'}" if before != after else "already"
                print(f"{service}: {change} at revision {after} (newest: {newest})")
            else:
                print(f"{service}: at revision {migrate.current(engine) or 'none (empty database)'} (newest: {newest})")
        finally:
            engine.dispose()
    return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    for path in jsonschema.export():
        print(path)
    return 0


def cmd_docs(args: argparse.Namespace, settings: Settings) -> int:
    from capture import docs

    for path in docs.export(Path(args.output) if args.output else docs.DOCS_DIR):
        print(path)
    return 0


COMMANDS = {
    "start": cmd_start,
    "run": cmd_run,
    "demo": cmd_demo,
    "inspect": cmd_inspect,
    "kafka": cmd_kafka,
    "schemas": cmd_schemas,
    "dlq": cmd_dlq,
    "replay": cmd_replay,
    "bench": cmd_bench,
    "db": cmd_db,
    "trace": cmd_trace,
    "docs": cmd_docs,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO if args.command == "run" else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("aiokafka").setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
        logging.getLogger("alembic").setLevel(logging.WARNING if not args.verbose else logging.INFO)
        return COMMANDS[args.command](args, settings_from(args))
    except Usage as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except Misconfigured as exc:
        print(f"{exc}", file=sys.stderr)
        return exc.code
    except PortUnavailable as exc:  # taken between the check and the server's bind
        print(f"pokesaga: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        error = exc.errors()[0]
        print(f"pokesaga: invalid setting {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"pokesaga: error: {exc}", file=sys.stderr)
        return 2
    except (BrokerError, KafkaConnectionError, KafkaError) as exc:
        print(f"pokesaga: error: {exc}", file=sys.stderr)
        return 1
    except SchemaMismatch as exc:
        print(f"pokesaga: error: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        print(f"pokesaga: database unavailable: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a folder that cannot be made; still one line, not a traceback
        print(f"pokesaga: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
