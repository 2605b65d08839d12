"""``run``, with the bench's passthrough chain besides the capture saga's services (``null-relay.N``)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from capture.settings import Settings
from engine.cli import services
from engine.cli.common import Usage, check_port, cut, exit_cleanly
from engine.cli.verb import Cli, Verb


def cmd_run(cli: Cli, args: argparse.Namespace, settings: Settings) -> int:
    if args.service.startswith("null-relay."):  # the bench's passthrough chain
        signal.signal(signal.SIGTERM, exit_cleanly)
        check_port(settings.metrics_port, settings.metrics_host, "POKESAGA_METRICS_PORT")
        return run_relay(args.service, cli.with_broker(settings, "run"))
    return services.cmd_run(cli, args, settings)


def run_relay(target: str, settings: Settings) -> int:
    from bench.relay import CHAIN, run_chain
    from engine.observe import health

    hop = target.removeprefix("null-relay.")
    if not (hop.isdigit() and hop.isascii()) or len(hop) > 6 or int(hop) >= len(CHAIN) - 1:
        last = len(CHAIN) - 2
        raise Usage(f"pokesaga run: unknown relay {cut(target)!r}; expected null-relay.0 .. null-relay.{last}")

    async def go() -> None:
        health.serve_http(settings.metrics_port, settings.metrics_host)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await run_chain(settings.bootstrap, int(hop), stop)

    asyncio.run(go())
    signal.signal(signal.SIGTERM, exit_cleanly)
    return 0


VERBS = {"run": Verb(services.add_run, cmd_run)}
