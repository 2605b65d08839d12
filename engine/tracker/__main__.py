"""The tracker of any saga, from its declaration's import path, until SIGTERM or Ctrl-C:

    python -m engine.tracker examples.transfer.saga:TRANSFER
    python -m engine.tracker my.saga:SAGA --display my.tracking:DISPLAY --settings my.settings:Settings

Settings are read from the environment as every service reads them (``KAFKA_BOOTSTRAP_SERVERS``,
``POKESAGA_TRACKER_PORT``, ...), by ``engine.Settings`` unless ``--settings`` names a subclass.
The saga's topics are made (or checked) with the replication the settings ask, as a service does.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import Any

from engine.broker import kafka, replication, security
from engine.saga import Saga
from engine.settings import Settings
from engine.tracker import app
from engine.tracker.tracking import Display, internal_topics


def _load(path: str, what: str) -> Any:
    module, _, name = path.partition(":")
    if not module or not name:
        raise SystemExit(f"python -m engine.tracker: {what} is MODULE:NAME, got {path!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"python -m engine.tracker: cannot load {what} {path!r}: {exc}") from None


async def _replicated(saga: Saga, settings: Settings) -> Settings:
    wanted = await replication.ensure_replicated(settings, saga.all_topics())
    await replication.refuse_under_replicated(settings, internal_topics(saga), wanted)
    return settings.model_copy(update={"replication_factor": wanted})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.tracker", description="The tracker of one saga.")
    parser.add_argument("saga", help="the saga's declaration, MODULE:NAME (e.g. examples.transfer.saga:TRANSFER)")
    parser.add_argument("--display", help="what it shows beyond its declaration, MODULE:NAME of a Display")
    parser.add_argument("--settings", help="the settings class, MODULE:NAME (default: engine.Settings)")
    args = parser.parse_args(argv)
    saga = _load(args.saga, "the saga")
    if not isinstance(saga, Saga):
        raise SystemExit(f"python -m engine.tracker: {args.saga} is no engine.Saga")
    display = _load(args.display, "the display") if args.display else None
    if display is not None and not isinstance(display, Display):
        raise SystemExit(f"python -m engine.tracker: {args.display} is no engine.tracker.tracking.Display")
    kind = _load(args.settings, "the settings") if args.settings else Settings
    if not (isinstance(kind, type) and issubclass(kind, Settings)):
        raise SystemExit(f"python -m engine.tracker: {args.settings} is no subclass of engine.Settings")
    settings = kind()
    if not settings.kafka_bootstrap_servers:
        raise SystemExit("python -m engine.tracker: set KAFKA_BOOTSTRAP_SERVERS (the brokers to read)")
    security.secure(settings)  # TLS or SASL, as the settings say: every client of the saga's brokers
    try:
        settings = asyncio.run(_replicated(saga, settings))
    except (replication.UnderReplicated, kafka.ReplicationUnavailable) as exc:
        raise SystemExit(f"python -m engine.tracker: {exc}") from None
    return app.run(saga, settings, display)


if __name__ == "__main__":
    sys.exit(main())
