"""The released schemas of the saga's events: schemas check, schemas release (engine.schemas)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine import schemas
from engine.cli.common import Failed
from engine.cli.verb import Cli, Verb
from engine.schemas.released import shown
from engine.settings import Settings

ACTIONS = {
    "check": "is each event's current schema compatible with its released one?",
    "release": "write the current version of each event not released yet",
}


def add_schemas(commands: Any, cli: Cli, more: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """``schemas check|release``; ``more``: a program's own actions (name → what it does) before them."""
    actions = {**(more or {}), **ACTIONS}
    parser = commands.add_parser("schemas", help="the JSON Schemas of the events: " + ", ".join(actions))
    parser.add_argument(
        "action", choices=list(actions), help="; ".join(f"{name}: {what}" for name, what in actions.items())
    )
    return parser


def directory(cli: Cli, action: str) -> Path:
    if cli.saga.schemas is None:
        raise Failed(f"{cli.prog} schemas {action}: saga {cli.saga.name} keeps no released schemas: "
                     "declare where, Saga(..., schemas=Path(...))")  # fmt: skip
    return cli.saga.schemas


def cmd_check(cli: Cli) -> int:
    where = directory(cli, "check")
    released = schemas.read(where)
    if not released.schemas and not released.unreadable:
        raise Failed(f"{cli.prog} schemas check: no released schemas in {where}: run `{cli.prog} schemas release`")
    problems = schemas.check(cli.saga.types, released, f"{cli.prog} schemas release")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"{len(cli.saga.types)} event types, {released.versions} versions: compatible")
    return 0


def cmd_release(cli: Cli) -> int:
    try:
        done = schemas.release(cli.saga.types, directory(cli, "release"))
    except ValueError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        print(f"{cli.prog} schemas release: nothing written (a released version is never rewritten: a change that "
              "breaks its readers needs a new version, dataversion + 1 and an upcaster)", file=sys.stderr)  # fmt: skip
        return 1
    for path in done.written:
        print(shown(path))
    for path in done.kept:
        print(f"{shown(path)}: kept as released (the model's schema differs, compatibly)", file=sys.stderr)
    if not done.written:
        print(f"{cli.prog} schemas release: nothing to release: every event's current version is released")
    return 0


def cmd_schemas(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    return cmd_check(cli) if args.action == "check" else cmd_release(cli)


VERBS = {"schemas": Verb(add_schemas, cmd_schemas)}
