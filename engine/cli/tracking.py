"""The tracker's verbs (``run tracker``, ``trace``), each through one function here.

Today the tracker is the top-level ``tracker`` package, and follows the capture saga only: it is
imported lazily, here and nowhere else in the engine (pyproject's import contracts list these imports
as the one exception). Once it is ``engine.tracker``, taking the saga, each function below is a
two-line change: its import, and the saga passed on.
"""

from __future__ import annotations

from typing import Any

from engine.cli.common import PROG, Usage
from engine.cli.verb import Cli
from engine.saga import Saga
from engine.settings import Settings


def follows(cli: Cli) -> None:
    """The tracker follows ``cli``'s saga; else one line (today's tracker follows the capture saga alone)."""
    from tracker.trace import CAPTURE

    if cli.saga is not CAPTURE:
        raise Usage(
            f"{cli.prog or PROG}: the tracker does not follow the {cli.saga.name} saga yet (only the capture saga)"
        )


def internal_topics(saga: Saga) -> tuple[str, ...]:
    """The tracker's own topics (its changelog), checked for replication before it starts."""
    from tracker.app import INTERNAL_TOPICS

    return tuple(INTERNAL_TOPICS)


def run(saga: Saga, settings: Settings) -> int:
    """The tracker in the foreground until SIGTERM or Ctrl-C."""
    from tracker.app import run

    return run(settings)  # type: ignore[arg-type]  # today's takes the capture saga's settings


async def find(saga: Saga, bootstrap: str, saga_id: str, stuck_after: float) -> dict[str, Any] | None:
    """One saga's timeline, read from the topics; None when no topic holds an event of it."""
    from tracker.trace import find

    return await find(bootstrap, saga_id, stuck_after)


def render(saga: Saga, view: dict[str, Any]) -> str:
    """The timeline as the terminal shows it."""
    from tracker.trace import render

    return render(view)
