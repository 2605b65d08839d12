"""Peers of ``pokesaga bench``: what a Python user would pick instead for a durable saga, running the
same capture workload on the same kind of database, measured in the same invocation.

Each peer is an optional extra (``pip install 'pokesaga[peers]'``); ``compare`` runs one and puts
its figures beside ours with the ratios.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

from capture.settings import Settings

PEERS = {"dbos": "dbos"}  # --peer NAME → the package it needs


def missing(peer: str) -> str | None:
    """The line to print when ``peer``'s package is not installed; None when it is."""
    if importlib.util.find_spec(PEERS[peer]) is None:
        return f"pokesaga bench --peer {peer} needs: pip install 'pokesaga[peers]'"
    return None


async def compare(peer: str, settings: Settings, options: Any, data: Path, ours: dict[str, Any]) -> dict[str, Any]:
    """Run ``peer`` under ``options``' load; its figures and the ratios of ours to it. Cancelled (an
    interrupt), the peer's threads finish the sagas they hold and stop, so the bench can end."""
    from bench.peers import dbos

    print(f"pokesaga bench: the same workload on the peer, {peer}, on {options.db}", file=sys.stderr)
    stop = threading.Event()
    try:
        theirs = await asyncio.to_thread(dbos.measure, settings, options, data, stop)
    finally:
        stop.set()
    ratios = {"sagas_per_s": round(ours["sagas_per_s"] / theirs["sagas_per_s"], 3) if theirs["sagas_per_s"] else None}
    if options.concurrency == 1:  # one saga at a time: the latency of a saga alone
        ours_p50, their_p50 = ours["e2e_ms"]["p50"], theirs["e2e_ms"]["p50"]
        ratios["p50"] = round(ours_p50 / their_p50, 3) if their_p50 else None
    return {"peer": theirs, "ratio_to_peer": ratios}
