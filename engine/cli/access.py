"""Who may do what on the brokers: ``acls`` prints the ACLs derived from the saga's declaration
(engine.ops.acls), and the ``kafka-acls.sh`` lines that add them; ``--apply`` adds them itself."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from engine.cli.common import Failed, Usage
from engine.cli.verb import Cli, Verb
from engine.settings import Settings


def add_acls(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    acls = commands.add_parser(
        "acls", help="the brokers' ACLs, one principal per service, derived from the saga's declaration"
    )
    shown = acls.add_mutually_exclusive_group()
    shown.add_argument("--commands", action="store_true", help="only the kafka-acls.sh lines that add them")
    shown.add_argument("--json", action="store_true", help="the ACLs as JSON")
    shown.add_argument(
        "--apply", action="store_true", help="make the missing topics and add the ACLs (as an administrator)"
    )
    acls.add_argument("--command-config", default="", help="kafka-acls.sh's --command-config: the admin's client file")
    acls.add_argument("--tracker", default="tracker", help="the tracker's principal, User:NAME (default tracker)")
    acls.add_argument("--starter", default="starter", help="the principal that starts sagas (default starter)")
    return acls


def cmd_acls(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from engine.ops import acls

    try:
        found = acls.derive(cli.saga, tracker=args.tracker, starter=args.starter)
    except ValueError as exc:
        raise Usage(f"{cli.prog} acls: {exc}") from None
    if args.json:
        print(json.dumps([vars(a) for a in found], indent=2))
        return 0
    if args.apply:
        settings = cli.with_broker(settings, "acls --apply")
        try:
            topics = cli.saga.all_topics()
            replication = settings.replication_factor
            added = asyncio.run(acls.apply(settings.bootstrap, found, topics, settings.partitions, replication))
        except acls.ApplyFailed as exc:
            raise Failed(f"{cli.prog}: {exc}") from None
        print(f"added {added} ACLs for {len(acls.principals(found))} principals on {settings.bootstrap}")
        return 0
    bootstrap = settings.kafka_bootstrap_servers or "BOOTSTRAP"
    lines = [acl.command(bootstrap, args.command_config) for acl in found]
    if not args.commands:
        print(acls.table(found))
        print()
    print("\n".join(lines))
    return 0


VERBS = {"acls": Verb(add_acls, cmd_acls)}
