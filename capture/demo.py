"""The demo: every service as its own process, N captures, progress, a summary table."""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

from capture.processes import ServiceProcess, stop_all
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from capture.starter import Outcome, TopicWatcher, publish, start_event
from contracts import pokedex
from engine.broker import kafka
from engine.local.broker import bindable, free_port
from engine.wire.envelope import Envelope

TRAINERS = ("Ash", "Misty", "Brock", "Gary", "Erika", "Sabrina", "Blaine", "Koga")


def demo_sagas(count: int, seed: int, run: str) -> list[Envelope]:
    """A reproducible mix of captures: easy ones, legendaries, Electric types, 1-hp ones."""
    rng = random.Random(seed)
    sagas = []
    for i in range(count):
        species = pokedex.lookup(rng.choice(pokedex.NAMES))
        assert species is not None
        level = rng.randint(5, 70)
        max_hp = species.max_hp(level)
        pokemon: dict[str, Any] = {"name": species.name, "level": level}
        roll = rng.random()
        if roll < 0.1:
            pokemon["hp"] = 1  # will faint under False Swipe
        elif roll < 0.7:
            pokemon["hp"] = max(2, max_hp // rng.randint(2, 8))  # already weakened
        trainer = {"name": f"{TRAINERS[i % len(TRAINERS)]}-{run}"}
        sagas.append(start_event(f"demo-{run}-{i:04d}", trainer, pokemon, source="pokesaga/demo"))
    return sagas


def summary_table(outcomes: dict[str, Outcome], total: int) -> str:
    counts: Counter[tuple[str, str]] = Counter()
    for outcome in outcomes.values():
        if outcome.type == "PokemonDelivered":
            counts[(outcome.type, f"in {outcome.data['location']}")] += 1
        else:
            counts[(outcome.type, f"{outcome.data['reason']} ({outcome.data['failed_step']})")] += 1
    rows = [("outcome", "detail", "sagas"), *((o, d, str(n)) for (o, d), n in sorted(counts.items()))]
    rows.append(("no outcome", "", str(total - len(outcomes))))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _progress(done: int, total: int, started: float, tty: bool) -> None:
    line = f"  {done}/{total} sagas at an outcome ({time.monotonic() - started:.1f}s)"
    print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)


def _tracker_port(settings: Settings) -> int:
    if bindable(settings.tracker_port, settings.metrics_host):
        return settings.tracker_port
    return free_port()  # another tracker has the default port


async def run_demo(settings: Settings, count: int, timeout: float, seed: int | None, keep: bool = False) -> int:
    """Run the demo against ``settings.bootstrap``; returns the exit code (0: all at an outcome)."""
    run = uuid.uuid4().hex[:6]
    seed = seed if seed is not None else random.randrange(2**32)
    log_dir = settings.data_dir / "logs"
    await kafka.ensure_topics(
        settings.bootstrap, CAPTURE.all_topics(), settings.partitions, replication=settings.replication_factor
    )
    print(f"starting {', '.join(SERVICES)} as separate processes (logs in {log_dir})", file=sys.stderr)
    processes = [ServiceProcess(s, settings, log_dir).start() for s in SERVICES]
    port = _tracker_port(settings)
    processes.append(ServiceProcess("tracker", settings, log_dir, {"POKESAGA_TRACKER_PORT": str(port)}).start())
    page = f"http://127.0.0.1:{port}/"
    print(f"saga tracker: open {page} to see every saga's timeline", file=sys.stderr)
    try:
        sagas = demo_sagas(count, seed, run)
        async with TopicWatcher(settings.bootstrap) as watcher:
            print(f"publishing {count} captures (seed {seed}) to capture.status", file=sys.stderr)
            await publish(settings.bootstrap, sagas)
            wanted = {s.sagaid for s in sagas}
            started, tty, last = time.monotonic(), sys.stderr.isatty(), -1
            deadline = started + timeout
            while time.monotonic() < deadline:
                await watcher.poll(500)
                done = len(wanted & watcher.outcomes.keys())
                if done != last:
                    _progress(done, count, started, tty)
                    last = done
                if done == count:
                    break
                dead = [p.target for p in processes if not p.alive]
                if dead:
                    print(
                        f"\npokesaga: error: service process exited: {', '.join(dead)} (see {log_dir})", file=sys.stderr
                    )
                    break
            if tty:
                print(file=sys.stderr)
            outcomes = {s: watcher.outcomes[s][0] for s in wanted if s in watcher.outcomes}
        if keep:
            print(summary_table(outcomes, count))
            print(f"\nthe services and the tracker keep running: {page} (Ctrl-C to stop)", file=sys.stderr)
            await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
    finally:
        stop_all(processes)
    print(summary_table(outcomes, count))
    print(f"\nsaga tracker was at {page}; `pokesaga demo --keep` leaves it running")
    print(f"trainers: {', '.join(f'{t}-{run}' for t in TRAINERS)}  (try: pokesaga inspect trainer {TRAINERS[0]}-{run})")
    missing = count - len(outcomes)
    if missing:
        print(f"pokesaga: error: {missing} of {count} sagas reached no outcome within {timeout:.0f}s", file=sys.stderr)
        return 1
    return 0
