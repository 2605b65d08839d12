"""``python -m tests.toy.evolve 1|2 VERB ...``: the engine's command line for one build of the toy saga."""

from __future__ import annotations

import sys

import engine
from engine import cli
from tests.toy.evolve import BUILDS


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BUILDS:
        print("usage: python -m tests.toy.evolve 1|2 VERB ...", file=sys.stderr)
        return 2
    saga = BUILDS[argv[0]]
    return cli.main(
        saga, argv[1:], settings=engine.Settings.for_saga(saga), prog=f"python -m tests.toy.evolve {argv[0]}"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
