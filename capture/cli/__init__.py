"""The ``pokesaga`` command line: the engine's verbs for the capture saga (engine.cli), and its own.

Its own, by group: sagas (start with the Pokédex's flags, inspect trainer) · services (run null-relay.N,
the bench's chain) · dev (kafka, demo, bench) · documents (schemas, docs). Nothing of the bench (bench) or of
the local broker (engine.local) is imported unless the command needs it (the local broker: only when
KAFKA_BOOTSTRAP_SERVERS is unset).
"""

from __future__ import annotations

from capture.cli import dev, documents, sagas, services
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.tracking import DISPLAY
from engine import cli
from engine.cli.common import Parser

GROUPS = (sagas.VERBS, services.VERBS, dev.VERBS, documents.VERBS)
DESCRIPTION = "A choreographed capture saga over Apache Kafka."


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        CAPTURE,
        argv,
        settings=Settings,
        prog="pokesaga",
        description=DESCRIPTION,
        groups=GROUPS,
        local_broker=dev.local_broker,
        display=DISPLAY,
    )


def build_parser() -> Parser:
    """``pokesaga``'s parser, as ``main`` builds it (to check a command line without running it)."""
    program = cli.Cli(CAPTURE, Settings, "pokesaga", dev.local_broker, DISPLAY)
    return cli.build_parser(program, cli.verbs(GROUPS), DESCRIPTION)
