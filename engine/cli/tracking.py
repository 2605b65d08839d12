"""The tracker's verbs (``run tracker``, ``trace``), each through one function here: the engine's tracker
(engine.tracker), handed the saga's declaration and the program's ``Display``, if it has one."""

from __future__ import annotations

from typing import Any

from engine.cli.verb import Cli
from engine.settings import Settings


def internal_topics(cli: Cli) -> tuple[str, ...]:
    """The tracker's own topics (its changelog), checked for replication before it starts."""
    from engine.tracker.tracking import internal_topics

    return internal_topics(cli.saga)


def run(cli: Cli, settings: Settings) -> int:
    """The tracker in the foreground until SIGTERM or Ctrl-C."""
    from engine.tracker.app import run

    return run(cli.saga, settings, cli.display)


async def find(cli: Cli, bootstrap: str, saga_id: str, stuck_after: float) -> dict[str, Any] | None:
    """One saga's timeline, read from the topics; None when no topic holds an event of it."""
    from engine.tracker.trace import find

    return await find(cli.saga, bootstrap, saga_id, stuck_after, cli.display)


def render(cli: Cli, view: dict[str, Any]) -> str:
    """The timeline as the terminal shows it."""
    from engine.tracker.trace import render

    return render(cli.saga, view, cli.display)
