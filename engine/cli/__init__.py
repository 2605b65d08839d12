"""The command line of any declared saga: ``engine.cli.main(saga, argv)``. Flags mirror the environment; a
flag overrides both.

Every saga gets the same verbs, by group: sagas (start, trace, inspect saga) · services (run, db) ·
recovery (replay, dlq) · schemas (check, release: for a saga that keeps its released schemas) · access
(acls); common.py holds what they share, tracking.py the tracker's. A program adds its own verbs — or
replaces one of these, by its name — with ``groups``: mappings of a verb's name to a ``Verb`` (how its
parser is added, and what runs it)::

    sys.exit(engine.cli.main(TRANSFER, settings=Settings, prog="python -m examples.transfer"))

Any error ends the command with one line on stderr, never a traceback (see ``main``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from engine import versions
from engine.broker import security
from engine.cli import common
from engine.cli.common import Failed, LocalBroker, Misconfigured, Parser, Usage, positive, settings_from
from engine.cli.verb import Cli, Verb
from engine.observe.health import PortUnavailable
from engine.saga import Saga
from engine.settings import Settings
from engine.store.db import SchemaMismatch

if TYPE_CHECKING:
    from engine.tracker.tracking import Display

__all__ = ["Cli", "Verb", "main"]


def verbs(groups: Iterable[Mapping[str, Verb]] = ()) -> dict[str, Verb]:
    """Every saga's verbs, then ``groups``' (one of the same name replaces it, where it stands)."""
    from engine.cli import access, recovery, sagas, schemas, services

    found: dict[str, Verb] = {}
    for group in (sagas.VERBS, services.VERBS, recovery.VERBS, schemas.VERBS, access.VERBS, *groups):
        found.update(group)
    return found


def build_parser(cli: Cli, known: Mapping[str, Verb], description: str = "") -> Parser:
    parser = Parser(prog=cli.prog, description=description or f"The {cli.saga.name} saga, choreographed over Kafka.")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--data-dir", help="where the SQLite files live (env POKESAGA_DATA_DIR)")
    parser.add_argument("--partitions", type=positive, help="partitions per topic (env POKESAGA_PARTITIONS)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for verb in known.values():
        verb.add(commands, cli)
    return parser


def main(
    saga: Saga,
    argv: list[str] | None = None,
    *,
    settings: type[Settings] = Settings,
    prog: str = "pokesaga",
    description: str = "",
    groups: Iterable[Mapping[str, Verb]] = (),
    local_broker: LocalBroker | None = None,
    display: Display | None = None,
) -> int:
    """Run one command of ``saga``'s command line (``argv``: default sys.argv[1:]); its exit code.

    ``settings``: the saga's settings class (read from the environment, the global flags over it);
    ``prog``: the program's name; ``groups``: the program's own verbs (see ``Verb``); ``local_broker``:
    the address of a development broker on this machine, or None, for when KAFKA_BOOTSTRAP_SERVERS is unset;
    ``display``: what the tracker (run tracker, trace) shows of the saga beyond its declaration."""
    common.PROG = prog
    if not settings.SERVICES:  # the engine's own, or a saga's that names no services: bound to this saga's
        settings = settings.for_saga(saga)
    cli = Cli(saga, settings, prog, local_broker, display)
    try:
        known = verbs(groups)
        args = build_parser(cli, known, description).parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO if args.command == "run" else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("aiokafka").setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
        if args.command != "run" and not args.verbose:  # a refusal is this command's one line
            for handler in logging.getLogger().handlers:
                handler.addFilter(security.RefusalsSaidElsewhere())
            # A refused connection leaves aiokafka's read future unretrieved; asyncio would log it, with
            # a traceback, when it is collected (often after the one line, at exit): not for a user.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        logging.getLogger("alembic").setLevel(logging.WARNING if not args.verbose else logging.INFO)
        given = settings_from(args, settings)
        versions.check_pins(given.publish_versions, saga.types, "POKESAGA_PUBLISH_VERSIONS")  # before connecting
        return int(known[args.command].run(cli, args, given))
    except Usage as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except Misconfigured as exc:
        print(f"{exc}", file=sys.stderr)
        return exc.code
    except Failed as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    except PortUnavailable as exc:  # taken between the check and the server's bind
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        error = exc.errors()[0]
        print(f"{prog}: invalid setting {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KafkaConnectionError as exc:  # a refusal (wrong password, untrusted certificate) said as such
        reason = asyncio.run(security.refusals())
        print(f"{prog}: {reason}" if reason else f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except security.AccessRefused as exc:
        print(f"{prog}: {exc.args[0]}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except SchemaMismatch as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        print(f"{prog}: database unavailable: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a folder that cannot be made; still one line, not a traceback
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
