"""For development: the local broker, the demo, the bench."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from capture.settings import SERVICES, Settings
from engine.cli.common import Failed, Usage, positive, stop_on_sigterm
from engine.cli.verb import Cli, Verb


def local_broker(settings: Settings) -> str | None:
    """The address of the local broker (or cluster) of ``pokesaga kafka start``, while it runs; else None."""
    from engine.local.broker import LocalKafka

    with broker_errors():
        return LocalKafka.running(settings.kafka_cache_dir).address()


@contextmanager
def broker_errors() -> Iterator[None]:
    """A local broker that cannot start, or answer: one line, exit code 1."""
    from engine.local.broker import BrokerError

    try:
        yield
    except BrokerError as exc:
        raise Failed(f"pokesaga: error: {exc}") from None


def add_kafka(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    broker = commands.add_parser("kafka", help="the local broker or cluster (Apache Kafka jars, KRaft, loopback)")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument(
        "--brokers", type=positive, default=1, help="start: nodes, each broker and controller (default 1; 3: a cluster)"
    )
    broker.add_argument(
        "--secure",
        action="store_true",
        help="start: the secured broker apart (TLS + SCRAM, the standard authorizer), a principal per service "
        "with its ACLs; its credentials in env files",
    )
    return broker


def add_demo(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    demo = commands.add_parser("demo", help="the whole saga: broker, four services, N captures, summary")
    demo.add_argument("--sagas", type=positive, default=40, help="captures to start (default 40)")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for outcomes")
    demo.add_argument("--seed", type=positive, help="seed of the demo's mix of captures")
    demo.add_argument("--keep", action="store_true", help="keep the services and the tracker running until Ctrl-C")
    return demo


def add_bench(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    bench = commands.add_parser("bench", help="the services under load (and the null-relay ceiling); one JSON line")
    bench.add_argument(
        "--sagas", type=positive, help="sagas to time (default 2000; --stall-one: 1000 per run; --console: 100000)"
    )
    load = bench.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=positive, default=200, help="sagas in flight (default 200)")
    load.add_argument(
        "--rate", type=float, help="sagas started per second, instead of a concurrency (--console: while it reads)"
    )
    bench.add_argument("--instances", type=positive, default=1, help="processes per service (default 1)")
    bench.add_argument(
        "--partitions", dest="bench_partitions", type=positive, help="partitions per topic (default: the setting, 3)"
    )
    bench.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    bench.add_argument("--failure-mix", type=float, default=0.0, help="share of sagas that fail (0..1)")
    bench.add_argument("--warmup", type=positive, default=100, help="sagas run first and not timed")
    bench.add_argument("--null-relay", action="store_true", help="only the passthrough chain: the ceiling")
    bench.add_argument("--compare-null", action="store_true", help="also the null relay, and the ratio")
    bench.add_argument(
        "--peer",
        choices=["dbos"],
        help="also the same workload on a peer (DBOS Transact), same database kind, and the ratios (extra: peers)",
    )
    secure = bench.add_mutually_exclusive_group()
    secure.add_argument(
        "--secure",
        action="store_true",
        help="on a private secured broker (TLS + SCRAM, the ACLs): each service as its own principal",
    )
    secure.add_argument(
        "--compare-secure", action="store_true", help="also its plaintext listener first, and the ratios"
    )
    bench.add_argument(
        "--stall-one",
        action="store_true",
        help="an undisturbed run, then one where one saga's step fails transiently for a while: the others' p99s",
    )
    bench.add_argument(
        "--stall-step", choices=SERVICES, default="combat", help="--stall-one: the step that stalls (combat)"
    )
    bench.add_argument(
        "--stall-seconds", type=float, default=10.0, help="--stall-one: how long it fails, in seconds (10)"
    )
    bench.add_argument(
        "--failover", action="store_true", help="instead: seconds a stopped instance's partitions stay unowned"
    )
    bench.add_argument("--rounds", type=positive, default=3, help="--failover: rounds of each way to stop (3)")
    bench.add_argument("--static-membership", action="store_true", help="--failover: name the instances")
    bench.add_argument(
        "--console", action="store_true", help="instead: the tracker's console API timed with --sagas held (100000)"
    )
    return bench


def cmd_kafka(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    with broker_errors():
        return kafka(cli, args, settings)


def kafka(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from engine.local.broker import LocalKafka

    if args.brokers < 1:
        raise Usage("pokesaga kafka: --brokers must be 1 or more")
    if args.secure and (args.action != "start" or args.brokers != 1):
        raise Usage("pokesaga kafka: --secure starts one secured broker (stop and status find it without)")
    local = LocalKafka.running(settings.kafka_cache_dir)
    secured = LocalKafka(settings.kafka_cache_dir, state=settings.kafka_cache_dir / "secured")
    if args.action == "start" and args.secure:
        return start_secured(cli, settings)
    if args.action == "start":
        address = LocalKafka(settings.kafka_cache_dir, brokers=args.brokers).start()
        print(address)
    elif args.action == "stop":
        stopped = [k.stop() for k in (local, LocalKafka(settings.kafka_cache_dir), secured) if k.address()]
        print("stopped" if stopped else "not running")
    else:
        running = []
        port = secured.state / "secured.port"
        if secured.address() and port.exists():  # its clients' listener; the PLAINTEXT one is the admin's
            running.append(f"localhost:{port.read_text().strip()} (secured; admin: {secured.address()})")
        running += [found for k in (local,) if (found := k.address())]  # the plain one's address last
        if not running:
            print("not running")
            return 1
        print("\n".join(running))
    return 0


def start_secured(cli: Cli, settings: Settings) -> int:
    """The secured broker, its principals' ACLs added as its administrator; where their credentials are."""

    from engine.broker import security
    from engine.local.broker import secured_kafka
    from engine.local.secured import ADMIN
    from engine.ops import acls

    found = acls.derive(cli.saga)
    names = [p.removeprefix("User:") for p in acls.principals(found)]
    local, listener = secured_kafka(settings.kafka_cache_dir, names)
    local.start()
    security.secure(listener.settings(ADMIN, settings))
    added = asyncio.run(acls.apply(listener.address, found, cli.saga.all_topics(), settings.partitions))
    folder = local.state / "credentials"
    print(f"credentials: {folder}/PRINCIPAL.env, for {', '.join([*names, ADMIN])} (admin: the super user; "
          f"{ADMIN}.properties for kafka-acls.sh)")  # fmt: skip
    print(f"ACLs: {added} added, derived from the saga's declaration ('pokesaga acls' shows them)")
    print(f"a service runs as itself: (set -a; . {folder}/{names[0]}.env; pokesaga run {names[0]})")
    print(listener.address)  # last, as every start prints it
    return 0


def cmd_demo(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from capture.demo import run_demo
    from engine.local.broker import provisioned

    stop_on_sigterm()

    with broker_errors(), provisioned(settings) as address:
        print(f"broker: {address}", file=sys.stderr)
        settings = settings.model_copy(update={"kafka_bootstrap_servers": address})
        return asyncio.run(run_demo(settings, args.sagas, args.timeout, args.seed, args.keep))


def cmd_bench(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    with broker_errors():
        return bench(args, settings)


def bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.load import Options, run

    if args.peer:
        from bench import peers

        if args.console or args.failover or args.null_relay or args.stall_one or args.rate is not None:
            raise Usage("pokesaga bench: --peer runs the services at a concurrency: not with --console, "
                        "--failover, --null-relay, --stall-one or --rate")  # fmt: skip
        needs = peers.missing(args.peer)
        if needs:
            raise Usage(needs)
    if args.secure or args.compare_secure:
        check_secure(args, settings)
    if args.console:
        from bench import console

        if args.null_relay or args.compare_null or args.stall_one or args.failover:
            raise Usage(
                "pokesaga bench: --console times the tracker alone: not with --null-relay, --compare-null, "
                "--stall-one or --failover"
            )
        if args.rate is not None and args.rate <= 0:
            raise Usage("pokesaga bench: --rate must be above 0")
        stop_on_sigterm()
        partitions = args.bench_partitions or args.partitions or settings.partitions
        live = settings.model_copy(update={"partitions": partitions})
        return console.run(live, args.sagas or 100_000, args.rate)  # --rate: published while it reads
    if args.failover:
        from bench import failover

        stop_on_sigterm()
        return failover.run(settings, max(1, args.rounds), args.static_membership)
    if not 0 <= args.failure_mix <= 1:
        raise Usage("pokesaga bench: --failure-mix must be within 0..1")
    if args.stall_one and (args.null_relay or args.compare_null):
        raise Usage("pokesaga bench: --stall-one runs the services: not with --null-relay or --compare-null")
    if not 0 < args.stall_seconds < 86400:
        raise Usage("pokesaga bench: --stall-seconds must be above 0 (and under a day)")
    if args.rate is not None and args.rate <= 0:
        raise Usage("pokesaga bench: --rate must be above 0")
    if args.db == "postgres" and not all(
        settings.databases.get(s) for s in ("status", "combat", "pokeball", "delivery")
    ):
        raise Usage("pokesaga bench: --db postgres needs POKESAGA_<SERVICE>_DB_URL set for each of the four services")
    options = Options(
        sagas=args.sagas if args.sagas is not None else 1000 if args.stall_one else 2000,
        concurrency=None if args.rate else args.concurrency,
        rate=args.rate,
        partitions=args.bench_partitions or args.partitions or settings.partitions,
        instances=max(1, args.instances),
        db=args.db,
        failure_mix=args.failure_mix,
        warmup=args.warmup,
        stall_one=args.stall_one,
        stall_step=args.stall_step,
        stall_seconds=args.stall_seconds,
        peer=args.peer,
        secure=args.secure,
        compare_secure=args.compare_secure,
    )
    stop_on_sigterm()  # once the arguments are known to be good
    return run(settings, options, args.null_relay, args.compare_null)


def check_secure(args: argparse.Namespace, settings: Settings) -> None:
    """``--secure`` and ``--compare-secure`` run the services on a private secured broker: alone."""
    import importlib.util

    flag = "--secure" if args.secure else "--compare-secure"
    others = ("--null-relay", "--compare-null", "--stall-one", "--peer", "--console", "--failover")
    given = [other for other in others if getattr(args, other.lstrip("-").replace("-", "_"))]
    if given:
        raise Usage(f"pokesaga bench: {flag} runs the services on a secured broker: not with {', '.join(given)}")
    if settings.kafka_bootstrap_servers or settings.kafka_security_protocol != "PLAINTEXT":
        raise Usage(f"pokesaga bench: {flag} starts a private secured local broker: unset KAFKA_BOOTSTRAP_SERVERS "
                    "and KAFKA_SECURITY_PROTOCOL (a broker of yours: pokesaga bench with its settings)")  # fmt: skip
    if importlib.util.find_spec("trustme") is None:
        raise Usage(f"pokesaga bench: {flag} makes the broker's certificates with trustme: pip install trustme")


VERBS = {"kafka": Verb(add_kafka, cmd_kafka), "demo": Verb(add_demo, cmd_demo), "bench": Verb(add_bench, cmd_bench)}
