"""The ``pokesaga`` command line, by command group. Flags mirror the environment; a flag overrides both.

sagas (start, trace, inspect) · services (run, db) · recovery (replay, dlq) · dev (kafka, demo,
bench) · documents (schemas, docs); common.py holds what they share.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from capture.cli import dev, documents, recovery, sagas, services
from capture.cli.common import Misconfigured, Parser, Usage, positive, settings_from
from devtools.broker import BrokerError
from engine.broker import security
from engine.observe.health import PortUnavailable
from engine.store.migrate import SchemaMismatch

GROUPS = (sagas, services, dev, recovery, documents)
COMMANDS = {name: command for group in GROUPS for name, command in group.COMMANDS.items()}


def build_parser() -> Parser:
    parser = Parser(prog="pokesaga", description="A choreographed capture saga over Apache Kafka.")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--data-dir", help="where the SQLite files live (env POKESAGA_DATA_DIR)")
    parser.add_argument("--partitions", type=positive, help="partitions per topic (env POKESAGA_PARTITIONS)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO if args.command == "run" else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("aiokafka").setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
        if args.command != "run" and not args.verbose:  # a refusal is this command's one line
            for handler in logging.getLogger().handlers:
                handler.addFilter(security.RefusalsSaidElsewhere())
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
    except KafkaConnectionError as exc:  # a refusal (wrong password, untrusted certificate) said as such
        reason = asyncio.run(security.refusals())
        print(f"pokesaga: {reason}" if reason else f"pokesaga: error: {exc}", file=sys.stderr)
        return 1
    except security.AccessRefused as exc:
        print(f"pokesaga: {exc.args[0]}", file=sys.stderr)
        return 1
    except (BrokerError, KafkaError) as exc:
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
