"""Starting and following a saga: start, trace, inspect saga."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pydantic import ValidationError

from engine.cli import inspection, tracking
from engine.cli.common import MAX_LINE, Parser, Usage, check_databases, cut, deadline, saga_id, seconds
from engine.cli.verb import Cli, Verb
from engine.settings import Settings
from engine.wire.envelope import Envelope
from engine.wire.text import printable


def add_deadline_and_wait(start: argparse.ArgumentParser) -> None:
    """``--saga-id``, ``--deadline``, ``--wait`` and ``--timeout``: what every saga's start takes."""
    start.add_argument("--saga-id", type=saga_id, help="default: a new UUID")
    start.add_argument(
        "--deadline",
        type=deadline,
        metavar="WHEN",
        help="when the saga must be over: 500ms, 30s, 2m, 1h from now, or an RFC 3339 time; "
        "a step reached later fails with deadline_exceeded and the saga unwinds",
    )
    start.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    start.add_argument("--timeout", type=seconds, default=60.0, help="seconds to --wait (default 60)")


def add_start(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    first = cli.saga.start.__name__
    start = commands.add_parser("start", help=f"publish a {first} start event; print the saga id")
    start.add_argument(
        "event", nargs="?", default="-", metavar="JSON", help=f"the {first} event's data as JSON ('-' or none: stdin)"
    )
    add_deadline_and_wait(start)
    return start


def add_trace(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    trace = commands.add_parser("trace", help="one saga's timeline, read from the topics (no tracker needed)")
    trace.add_argument("saga_id", metavar="SAGA_ID")
    trace.add_argument("--json", action="store_true", help="the timeline as JSON, as the tracker serves it")
    return trace


def add_inspect(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    inspect = commands.add_parser("inspect", help="read-only view of each service's local state")
    what = inspect.add_subparsers(dest="what", required=True, parser_class=Parser)
    add_inspect_saga(what)
    return inspect


def add_inspect_saga(what: Any) -> None:
    """``inspect saga ID``: a program that adds its own ``inspect`` subcommands adds this one too."""
    sub = what.add_parser("saga", help="one saga, per service")
    sub.add_argument("key", metavar="ID")
    sub.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_start(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    kind = cli.saga.start
    if args.event == "-" and sys.stdin.isatty():  # nothing piped in: say so rather than wait for it
        raise Usage(f"{cli.prog} start: give the {kind.__name__} event as JSON, as an argument or on stdin")
    text = sys.stdin.read() if args.event == "-" else args.event
    try:
        event = kind.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"]))
        raise Usage(
            cut(f"{cli.prog} start: {kind.__name__}: {where + ': ' if where else ''}{error['msg']}", MAX_LINE)
        ) from None
    return start_saga(cli, args, settings, event)


def start_saga(cli: Cli, args: argparse.Namespace, settings: Settings, event: Any, describe: Any = None) -> int:
    """Publish ``event`` as the start of a saga (``args``: saga id, deadline, wait and timeout), print its
    id and, with ``--wait``, its outcome (``describe(envelope)``: the line to print; default ``outcome_line``)."""
    from engine.client import Client

    settings = cli.with_broker(settings, "start")

    async def go() -> int:
        async with Client(cli.saga, settings, source=f"{cli.saga.name}/cli", watch_outcomes=args.wait) as client:
            saga_id = await client.start(event, args.saga_id, args.deadline)
            print(saga_id, flush=True)
            if not args.wait:
                return 0
            outcome = await client.outcome(saga_id, args.timeout)
        if outcome is None:
            print(
                f"{cli.prog}: no outcome for saga {saga_id} within {args.timeout:.0f}s (are the services running?)",
                file=sys.stderr,
            )
            return 1
        print((describe or outcome_line)(outcome))
        return 0

    return asyncio.run(go())


def outcome_line(outcome: Envelope) -> str:
    """``TransferFailed: account_closed at deposits; undone: withdrawals``, or the outcome's data as JSON."""
    data = outcome.data
    if "reason" in data and "failed_step" in data:
        undone = ", ".join(data.get("undone") or ()) or "nothing"
        return printable(f"{outcome.type}: {data['reason']} at {data['failed_step']}; undone: {undone}")
    return printable(f"{outcome.type}: {json.dumps(data, sort_keys=True)}")


def cmd_trace(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    settings = cli.with_broker(settings, "trace")
    view = asyncio.run(tracking.find(cli, settings.bootstrap, args.saga_id, settings.stuck_after))
    if view is None:
        print(f"{cli.prog} trace: no event of saga {cut(args.saga_id)!r} on the {family(cli)} topics", file=sys.stderr)
        return 1
    print(json.dumps(view, indent=2) if args.json else tracking.render(cli, view))
    return 0


def family(cli: Cli) -> str:
    """What the saga's topics are named after: ``capture`` of ``capture.status``."""
    return cli.saga.topics[0].split(".")[0]


def cmd_inspect(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    check_databases(settings, cli.saga.services, args, create=False)
    view = inspection.saga(cli.saga, settings, args.key)
    print(json.dumps(view, indent=2, sort_keys=True, default=str) if args.json else inspection.render_saga(view))
    return 0


VERBS = {
    "start": Verb(add_start, cmd_start),
    "trace": Verb(add_trace, cmd_trace),
    "inspect": Verb(add_inspect, cmd_inspect),
}
