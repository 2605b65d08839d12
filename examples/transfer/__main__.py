"""The transfer saga's command line: the engine's (engine.cli), for TRANSFER — nothing of its own.

python -m examples.transfer run withdrawals      # the step and its compensator, until SIGTERM
python -m examples.transfer start '{"from_account": "alice", "to_account": "bob", "amount": 2500}' --wait
python -m examples.transfer inspect saga SAGA_ID  # and trace, dlq list|replay, replay, db upgrade|current
"""

from __future__ import annotations

import sys

from engine import cli
from examples.transfer.saga import TRANSFER
from examples.transfer.settings import Settings


def main(argv: list[str] | None = None) -> int:
    return cli.main(TRANSFER, argv, settings=Settings, prog="python -m examples.transfer")


if __name__ == "__main__":
    sys.exit(main())
