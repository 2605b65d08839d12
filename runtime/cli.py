"""The ``pokesaga`` command line. Flags mirror the environment; a flag overrides both."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from contracts import jsonschema, pokedex
from contracts.events import Status
from runtime.broker import BrokerError, LocalKafka, provisioned
from runtime.migrate import SchemaMismatch
from runtime.settings import SERVICES, Settings


class Usage(Exception):
    """A wrong argument: one line, exit code 2."""


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
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.bootstrap_servers:
        overrides["kafka_bootstrap_servers"] = args.bootstrap_servers
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.partitions:
        overrides["partitions"] = args.partitions
    return Settings(**overrides)


def with_broker(settings: Settings, command: str) -> Settings:
    """``settings`` with a bootstrap address: the configured one, else the local broker's."""
    if settings.kafka_bootstrap_servers:
        return settings
    address = LocalKafka(settings.kafka_cache_dir).address()
    if address is None:
        raise Usage(f"pokesaga {command}: no broker: set KAFKA_BOOTSTRAP_SERVERS or run 'pokesaga kafka start'")
    return settings.model_copy(update={"kafka_bootstrap_servers": address})


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    from runtime import kafka
    from runtime.starter import TopicWatcher, publish, start_event

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
        await kafka.ensure_topics(settings.bootstrap, kafka.saga_topics(), settings.partitions, timeout=15)
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
    from runtime import bootstrap

    if args.service == "tracker":  # the observer: a faust app, not a participant
        from tracker.app import run

        return run(with_broker(settings, "run"))
    if args.service.startswith("null-relay."):  # the bench's passthrough chain
        return run_relay(args.service, with_broker(settings, "run"))
    bootstrap.resolve(args.service)  # a wrong name fails here, before any connection
    settings = with_broker(settings, "run")
    _run_loop(bootstrap.serve(args.service, settings), settings.uvloop)
    signal.signal(signal.SIGTERM, _exit_cleanly)  # asyncio restored the default on the way out
    return 0


def run_relay(target: str, settings: Settings) -> int:
    from runtime import health
    from runtime.relay import CHAIN, run_chain

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
    from runtime.demo import run_demo

    _stop_on_sigterm()

    with provisioned(settings) as address:
        print(f"broker: {address}", file=sys.stderr)
        settings = settings.model_copy(update={"kafka_bootstrap_servers": address})
        return asyncio.run(run_demo(settings, args.sagas, args.timeout, args.seed, args.keep))


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    from runtime import views

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
    from runtime.bench import Options, run

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
    from runtime import bootstrap, replay

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
    from runtime import deadletters

    settings = with_broker(settings, "dlq")
    dlq = deadletters.dlq_topic(args.topic)

    async def go() -> int:
        from runtime import kafka

        if dlq not in kafka.saga_topics() and not await kafka.topic_exists(settings.bootstrap, dlq):
            raise Usage(f"pokesaga dlq: no topic {dlq!r}")
        if args.action == "list":
            letters = await deadletters.list_dead_letters(settings.bootstrap, dlq)
            for letter in letters:
                if args.json:
                    print(json.dumps(letter.as_dict(), sort_keys=True))
                else:
                    print(f"{letter.partition}:{letter.offset}  key={letter.key}  {letter.reason}")
            if not args.json:
                print(f"{len(letters)} dead letter{'s' * (len(letters) != 1)} in {dlq}")
            return 0
        letters = await deadletters.replay(
            settings.bootstrap, dlq, dry_run=args.dry_run, saga=args.saga, reason=args.reason
        )
        verb = "would re-publish" if args.dry_run else "re-published"
        for letter in letters:
            print(f"{verb} {letter.partition}:{letter.offset} key={letter.key} to {letter.source}")
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
    from runtime import migrate
    from runtime.bootstrap import METADATA
    from runtime.db import make_engine

    for service in SERVICES if args.service == "all" else [args.service]:
        engine = make_engine(settings.db_url(service))
        try:
            newest = migrate.head(service, METADATA[service])
            if args.action == "upgrade":
                before, after = migrate.upgrade(engine, service, METADATA[service])
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
