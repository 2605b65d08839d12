"""The ``pokesaga`` program's entry: a stop asked for (SIGTERM) while the command line is still being
loaded is a clean exit, not a death by signal — nothing has started yet. The commands install
their own handlers once they run (engine.cli.services)."""

from __future__ import annotations

import signal


def _nothing_started(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main() -> int:
    signal.signal(signal.SIGTERM, _nothing_started)
    from capture.cli import main as cli_main  # a second or so of imports

    return cli_main()
