"""The capture saga's own ways to start and look: ``start`` with the Pokédex's flags, ``inspect trainer``
(and ``inspect saga`` with each service's own row of the saga). ``trace`` is the engine's."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydantic import ValidationError

from capture.settings import SERVICES, Settings
from contracts import pokedex
from contracts.events import PokemonEncountered, Status
from engine.cli import sagas
from engine.cli.common import Parser, Usage, check_databases, cut, positive
from engine.cli.verb import Cli, Verb
from engine.wire.envelope import Envelope


def add_start(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    start = commands.add_parser("start", help="publish a PokemonEncountered start event; print the saga id")
    start.add_argument("--pokemon", default="Pidgey", help="species name, e.g. Mewtwo (default Pidgey)")
    start.add_argument("--trainer", default="Sacha", help="trainer name (default Sacha)")
    start.add_argument("--level", type=positive)
    start.add_argument("--hp", type=positive)
    start.add_argument("--max-hp", type=positive)
    start.add_argument("--status", choices=[s.value for s in Status])
    start.add_argument("--lead", default="Pikachu", help="the trainer's lead Pokémon (default Pikachu)")
    start.add_argument("--lead-level", type=positive, default=60)
    sagas.add_deadline_and_wait(start)
    return start


def add_inspect(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    inspect = commands.add_parser("inspect", help="read-only view of each service's local state")
    what = inspect.add_subparsers(dest="what", required=True, parser_class=Parser)
    trainer = what.add_parser("trainer", help="a trainer's bag, party, PC and sagas")
    trainer.add_argument("key", metavar="NAME")
    trainer.add_argument("--json", action="store_true", help="machine-readable output")
    sagas.add_inspect_saga(what)
    return inspect


def cmd_start(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from capture.starter import Outcome

    if pokedex.lookup(args.pokemon) is None:
        raise Usage(f"pokesaga start: {pokedex.unknown(args.pokemon, shown=cut(args.pokemon))}")
    pokemon = {"name": args.pokemon, "level": args.level, "hp": args.hp, "max_hp": args.max_hp, "status": args.status}
    trainer = {"name": args.trainer, "lead": {"name": args.lead, "level": args.lead_level}}
    try:
        event = PokemonEncountered.model_validate(
            {"trainer": trainer, "pokemon": {k: v for k, v in pokemon.items() if v is not None}}
        )
    except ValidationError as exc:
        raise Usage(f"pokesaga start: {exc.errors()[0]['msg']}") from None

    def describe(outcome: Envelope) -> str:
        return f"{outcome.type}: {Outcome(outcome.sagaid, outcome.type, outcome.data).detail}"

    return sagas.start_saga(cli, args, settings, event, describe)


def cmd_inspect(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
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


VERBS = {"start": Verb(add_start, cmd_start), "inspect": Verb(add_inspect, cmd_inspect)}
