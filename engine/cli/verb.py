"""A verb of a saga's command line, and what every verb knows of the program it runs in."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.cli import common
from engine.cli.common import LocalBroker, S
from engine.saga import Saga
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.tracker.tracking import Display


@dataclass(frozen=True)
class Cli:
    """What every verb knows of the program it runs in: the saga, its settings' class, the program's
    name (the start of every error line), how to find a local development broker and what the tracker
    shows of the saga (engine.tracker.tracking.Display), if it has them."""

    saga: Saga
    settings: type[Settings] = Settings
    prog: str = "pokesaga"
    local_broker: LocalBroker | None = None
    display: Display | None = None  # what the tracker shows of the saga beyond its declaration

    def with_broker(self, settings: S, command: str) -> S:
        """``settings`` with a bootstrap address: the configured one, else the local broker's; else one line."""
        return common.with_broker(settings, command, self.local_broker)


@dataclass(frozen=True)
class Verb:
    """One verb of the command line: ``add(commands, cli)`` adds its parser to the subcommands (argparse's
    ``add_parser``); ``run(cli, args, settings)`` runs it and returns the exit code."""

    add: Callable[[Any, Cli], object]
    run: Callable[[Cli, argparse.Namespace, Any], int]  # the settings: the saga's own class
