"""Starting and following sagas: start, trace, inspect."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pydantic import ValidationError

from capture.cli.common import Parser, Usage, check_databases, cut, deadline, positive, with_broker
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from contracts import pokedex
from contracts.events import Status


def add(commands: Any) -> None:
    """Add this group's commands to the parser's subcommands."""
    start = commands.add_parser("start", help="publish a PokemonEncountered start event; print the saga id")
    start.add_argument("--pokemon", default="Pidgey", help="species name, e.g. Mewtwo (default Pidgey)")
    start.add_argument("--trainer", default="Sacha", help="trainer name (default Sacha)")
    start.add_argument("--level", type=positive)
    start.add_argument("--hp", type=positive)
    start.add_argument("--max-hp", type=positive)
    start.add_argument("--status", choices=[s.value for s in Status])
    start.add_argument("--lead", default="Pikachu", help="the trainer's lead Pokémon (default Pikachu)")
    start.add_argument("--lead-level", type=positive, default=60)
    start.add_argument("--saga-id", help="default: a new UUID")
    start.add_argument(
        "--deadline",
        type=deadline,
        metavar="WHEN",
        help="when the saga must be over: 500ms, 30s, 2m, 1h from now, or an RFC 3339 time; "
        "a step reached later fails with deadline_exceeded and the saga unwinds",
    )
    start.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to --wait (default 60)")

    trace = commands.add_parser("trace", help="one saga's timeline, read from the topics (no tracker needed)")
    trace.add_argument("saga_id", metavar="SAGA_ID")
    trace.add_argument("--json", action="store_true", help="the timeline as JSON, as the tracker serves it")

    inspect = commands.add_parser("inspect", help="read-only view of each service's local state")
    what = inspect.add_subparsers(dest="what", required=True, parser_class=Parser)
    for name, helptext in (("trainer", "a trainer's bag, party, PC and sagas"), ("saga", "one saga, per service")):
        sub = what.add_parser(name, help=helptext)
        sub.add_argument("key", metavar="NAME" if name == "trainer" else "ID")
        sub.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    from capture.starter import TopicWatcher, publish, start_event
    from engine.broker import kafka

    if pokedex.lookup(args.pokemon) is None:
        raise Usage(f"pokesaga start: unknown Pokémon {cut(args.pokemon)!r} (not among the 151 of the Pokédex)")
    pokemon = {"name": args.pokemon, "level": args.level, "hp": args.hp, "max_hp": args.max_hp, "status": args.status}
    trainer = {"name": args.trainer, "lead": {"name": args.lead, "level": args.lead_level}}
    try:
        envelope = start_event(
            args.saga_id, trainer, {k: v for k, v in pokemon.items() if v is not None}, deadline=args.deadline
        )
    except ValidationError as exc:
        raise Usage(f"pokesaga start: {exc.errors()[0]['msg']}") from None
    settings = with_broker(settings, "start")

    async def go() -> int:
        await kafka.ensure_topics(
            settings.bootstrap, CAPTURE.all_topics(), settings.partitions, 15, settings.replication_factor
        )
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


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    from capture.tracking import DISPLAY
    from engine.tracker.trace import find, render

    settings = with_broker(settings, "trace")
    view = asyncio.run(find(CAPTURE, settings.bootstrap, args.saga_id, settings.stuck_after, DISPLAY))
    if view is None:
        print(f"pokesaga trace: no event of saga {cut(args.saga_id)!r} on the capture topics", file=sys.stderr)
        return 1
    print(json.dumps(view, indent=2) if args.json else render(CAPTURE, view, DISPLAY))
    return 0


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


COMMANDS = {"start": cmd_start, "trace": cmd_trace, "inspect": cmd_inspect}
