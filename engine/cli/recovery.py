"""Recovering a saga's services: replay (offsets reset, then a rebuild: engine.ops.offsets,
engine.worker.rebuild), dlq (dead letters listed and republished: engine.ops.deadletters)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from engine.cli.common import Parser, Usage, cut, iso_datetime, positive
from engine.cli.verb import Cli, Verb
from engine.settings import Settings


def add_replay(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    replay = commands.add_parser("replay", help="move a stopped service's offsets back, to reprocess on restart")
    replay.add_argument(
        "service", help=f"{'|'.join(cli.saga.services)} (with its compensator), or compensations.SERVICE"
    )
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-earliest", action="store_true", help="the start of each partition")
    where.add_argument("--to-datetime", type=iso_datetime, metavar="ISO", help="the first record at or after ISO")
    where.add_argument("--to-offset", type=positive, metavar="N", help="offset N of each partition")
    replay.add_argument("--dry-run", action="store_true", help="print the plan per partition, change nothing")
    return replay


def add_dlq(commands: Any, cli: Cli) -> argparse.ArgumentParser:
    example = cli.saga.consumed[0]
    dlq = commands.add_parser("dlq", help="dead letters: list them, or re-publish them after a fix")
    dlq_actions = dlq.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = dlq_actions.add_parser("list", help="what is in TOPIC.dlq, with reasons")
    listing.add_argument("topic", metavar="TOPIC", help=f"e.g. {example} (or {example}.dlq)")
    listing.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    republishing = dlq_actions.add_parser(
        "replay", aliases=["republish"], help="re-publish TOPIC.dlq to its source topic"
    )
    republishing.add_argument("topic", metavar="TOPIC")
    republishing.add_argument("--dry-run", action="store_true", help="show what would be re-published")
    republishing.add_argument("--saga", help="only the dead letters of this saga id (record key)")
    republishing.add_argument("--reason", help="only dead letters whose reason contains this text")
    return dlq


def show(moves: list[Any]) -> None:
    print(f"{'group':<24} {'partition':<22} {'current':>8}    new")
    for move in moves:
        print(move)


def cmd_replay(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from engine.ops import offsets
    from engine.worker import prepare

    participants = cli.saga.service_of(args.service)
    settings = cli.with_broker(settings, "replay")

    async def go() -> int:
        moves = await offsets.plan_reset(
            settings.bootstrap, participants, earliest=args.to_earliest, when=args.to_datetime, offset=args.to_offset
        )
        if args.dry_run:
            show(moves)
            print(f"dry run: {len(moves)} partitions would be moved; nothing changed")
            return 0
        try:
            # The rebuild is marked first, with where it re-reads from: a ``replay`` interrupted
            # after this is finished by the service itself at its start.
            moves = await prepare.begin_rebuild(cli.saga, moves, settings, earliest=args.to_earliest)
            show(moves)
            await offsets.reset(settings.bootstrap, moves)
        except (offsets.GroupActive, prepare.RebuildRefused) as exc:
            print(f"{cli.prog} replay: {exc}", file=sys.stderr)
            return 1
        print(f"moved {len(moves)} partitions; start {args.service} to rebuild from them")
        return 0

    return asyncio.run(go())


def cmd_dlq(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    from engine.ops import deadletters
    from engine.wire.deadletter import dlq_topic
    from engine.wire.text import printable

    settings = cli.with_broker(settings, "dlq")
    dlq = dlq_topic(args.topic)

    async def go() -> int:
        from engine.broker import kafka

        exists = await kafka.topic_exists(settings.bootstrap, dlq)
        if not exists and dlq not in cli.saga.all_topics():
            raise Usage(f"{cli.prog} dlq: no topic {cut(dlq)!r}")
        # One of the saga's, not made yet (no service has run on this broker): nothing dead-lettered.
        if args.action == "list":
            letters = await deadletters.list_dead_letters(settings.bootstrap, dlq) if exists else []
            for letter in letters:
                if args.json:
                    print(json.dumps(letter.as_dict(), sort_keys=True))
                else:
                    print(f"{letter.partition}:{letter.offset}  key={printable(str(letter.key), 200)}  {letter.reason}")
            if not args.json:
                print(f"{len(letters)} dead letter{'s' * (len(letters) != 1)} in {dlq}")
            return 0
        letters = (
            await deadletters.republish(
                settings.bootstrap, dlq, dry_run=args.dry_run, saga=args.saga, reason=args.reason
            )
            if exists
            else []
        )
        verb = "would re-publish" if args.dry_run else "re-published"
        for letter in letters:
            print(f"{verb} {letter.partition}:{letter.offset} key={printable(str(letter.key), 200)} to {letter.source}")
        print(f"{verb} {len(letters)} dead letter{'s' * (len(letters) != 1)} from {dlq}")
        return 0

    return asyncio.run(go())


VERBS = {"replay": Verb(add_replay, cmd_replay), "dlq": Verb(add_dlq, cmd_dlq)}
