"""What the saga says, written down: schemas (export, and the engine's check and release), docs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from capture.settings import Settings
from contracts import jsonschema
from engine.cli import schemas
from engine.cli.verb import Cli, Verb

EXPORT = {"export": "rewrite contracts/schemas/ (the envelope's and each event's current schema)"}


def add_schemas(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    return schemas.add_schemas(commands, cli, EXPORT)


def add_docs(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    docs = commands.add_parser("docs", help="draw the choreography from the declaration: Mermaid and AsyncAPI")
    docs.add_argument("--output", metavar="DIR", help="where to write them (default: docs/ of the checkout)")
    return docs


def cmd_schemas(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    if args.action != "export":
        return schemas.cmd_schemas(cli, args, settings)
    for path in jsonschema.export():
        print(path)
    return 0


def cmd_docs(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from capture import docs

    for path in docs.export(Path(args.output) if args.output else docs.DOCS_DIR):
        print(path)
    return 0


VERBS = {"schemas": Verb(add_schemas, cmd_schemas), "docs": Verb(add_docs, cmd_docs)}
