"""How much memory and time a rebuild's history takes: loaded from the topics, then looked up.

    python -m bench.rebuild 10000 200000 [--code DIR ...] [--batch 500]

For each count, on a private local broker (or ``KAFKA_BOOTSTRAP_SERVERS``), two new topics: the
pokeball participant's input (one ``PokemonWeakened`` per saga) and its history (the
``PokemonCaught`` it published for each). Then, in a new process for each ``--code`` checkout
(default: this one) — so that its peak memory is the rebuild's alone — what a rebuild does:
``engine.worker.rebuild.load`` over both topics, then the input read back in batches, each record's
recorded decision looked up as the participant's loop does (a batch's causes in one read where
the history can, then one lookup per record). Prints the load time, the lookup time, the
decisions found, the process's peak RSS (``ru_maxrss``) less its peak before the load, and the
size of the history's file on disk.

``--code DIR``: measure the engine of another checkout (e.g. ``git worktree add /tmp/base
<commit>``) with this script and this virtualenv; given several times, each is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WEAKENED = {
    "trainer": {"name": "Rebuild", "lead": {"name": "Pikachu", "level": 60}},
    "pokemon": {"name": "Caterpie", "level": 7, "hp": 5, "max_hp": 60, "status": "PARALYZED", "types": ["Bug"]},
    "hp_before": 20,
    "damage": 15,
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _spilled_mb() -> float:
    """The size of this process's SQLite temporary files (the history on disk; unlinked, still open)."""
    size = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "etilqs_" in os.readlink(f"/proc/self/fd/{fd}"):
                size += os.fstat(int(fd)).st_size
        except OSError:
            continue
    return size / 2**20


async def record(bootstrap: str, count: int, inputs: str, outputs: str, chunk: int = 5_000) -> float:
    """``count`` sagas' input and recorded decision on the two topics; the seconds it took."""
    from capture.bootstrap import PARTICIPANTS
    from contracts.events import PokemonCaught, PokemonWeakened
    from engine.broker import kafka
    from engine.wire.envelope import wrap

    started = time.perf_counter()
    await kafka.ensure_topics(bootstrap, [inputs, outputs], partitions=3)
    source = PARTICIPANTS["pokeball"].source
    weakened = PokemonWeakened.model_validate(WEAKENED)
    caught = PokemonCaught.model_validate({**WEAKENED, "ball": "Poke Ball", "shakes": 3})
    producer = kafka.producer(bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for start in range(0, count, chunk):
            sent = []
            for n in range(start, min(count, start + chunk)):
                saga = f"rebuild-{n}"
                cause = wrap(weakened, saga_id=saga, source="pokesaga/combat", causation_id=f"paralyzed-{n}")
                decision = wrap(caught, saga_id=saga, source=source, causation_id=cause.id)
                sent.append(await producer.send(inputs, cause.to_json(), key=saga.encode()))
                sent.append(await producer.send(outputs, decision.to_json(), key=saga.encode()))
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def rebuild(bootstrap: str, inputs: str, outputs: str, batch: int) -> dict[str, Any]:
    """In this process: the history loaded as a rebuild loads it, then every input record's lookup."""
    from capture.bootstrap import PARTICIPANTS
    from capture.saga import CAPTURE
    from engine.broker import kafka
    from engine.worker import rebuild

    keyed: Any = None  # the code before engine.worker.history kept decisions by the cause id alone
    with contextlib.suppress(ImportError):
        from engine.worker.history import key as keyed
    from engine.wire.codec import decode_envelope

    participant = PARTICIPANTS["pokeball"]
    before = _peak_mb()
    started = time.perf_counter()
    history: Any = (await rebuild.load(bootstrap, [participant], [inputs, outputs], CAPTURE.types))[participant.name]
    loaded = time.perf_counter() - started
    after_load, spilled = _peak_mb(), _spilled_mb()
    prefetch = getattr(history, "prefetch", None)  # the history on disk reads a batch at once; a dict need not
    looking, found, read = 0.0, 0, 0

    def lookups(causes: list[str]) -> tuple[float, int]:
        at = time.perf_counter()
        if prefetch is not None:
            prefetch(causes)
        hits = sum(1 for cause in causes if history.get(cause, ()))  # causes: keys (saga, cause id)
        return time.perf_counter() - at, hits

    pending: list[str] = []
    async for rec in kafka.scan_to_end(bootstrap, [inputs]):
        cause = decode_envelope(rec.value)
        pending.append(keyed(cause.sagaid, cause.id) if keyed else cause.id)
        if len(pending) >= batch:
            took, hits = lookups(pending)
            looking, found, read, pending = looking + took, found + hits, read + len(pending), []
    if pending:
        took, hits = lookups(pending)
        looking, found, read = looking + took, found + hits, read + len(pending)
    return {
        "load_s": round(loaded, 2),
        "lookup_s": round(looking, 2),
        "looked_up": read,
        "found": found,
        "rss_before_mb": round(before, 1),
        "peak_rss_after_load_mb": round(after_load, 1),
        "peak_rss_mb": round(_peak_mb(), 1),
        "on_disk_mb": round(spilled, 1),
    }


def measure(code: Path, bootstrap: str, inputs: str, outputs: str, batch: int) -> dict[str, Any]:
    """``rebuild`` in a new process running ``code``'s engine."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    args = [sys.executable, str(Path(__file__).resolve()), "--child", bootstrap, inputs, outputs, str(batch)]
    done = subprocess.run(args, env=env, cwd=code, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench.rebuild: the rebuild in {code} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(figures["engine"]) != code.resolve():
        raise SystemExit(f"bench.rebuild: {code} ran the engine of {figures['engine']}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="*", type=int, help="sagas recorded, one run each")
    parser.add_argument("--code", type=Path, action="append", help="a checkout whose engine to measure (repeatable)")
    parser.add_argument("--batch", type=int, default=500, help="records per batch (POKESAGA_BATCH_SIZE)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bootstrap, inputs, outputs, batch = args.child
        import engine

        figures = asyncio.run(rebuild(bootstrap, inputs, outputs, int(batch)))
        figures["engine"] = str(Path(engine.__file__).resolve().parents[1])
        print(json.dumps(figures), flush=True)
        return
    from capture.settings import Settings
    from engine.local.broker import provisioned

    codes = args.code or [ROOT]
    settings = Settings()
    with (
        tempfile.TemporaryDirectory(prefix="pokesaga-rebuildbench-broker-") as state,
        provisioned(settings, state=Path(state)) as bootstrap,
    ):
        for count in args.counts:
            run = uuid.uuid4().hex[:8]
            inputs, outputs = f"rebuildbench-{run}.pokeball", f"rebuildbench-{run}.delivery"
            seconds = asyncio.run(record(bootstrap, count, inputs, outputs))
            print(f"{count:>9,} sagas recorded in {seconds:6.1f} s", flush=True)
            for code in codes:
                f = measure(code, bootstrap, inputs, outputs, args.batch)
                assert f["found"] == f["looked_up"] == count, f
                print(
                    f"{count:>9,} sagas, {code}: loaded in {f['load_s']:6.1f} s, looked up in {f['lookup_s']:5.1f} s; "
                    f"peak RSS {f['peak_rss_mb']:7.1f} MB ({f['peak_rss_mb'] - f['rss_before_mb']:+7.1f} MB "
                    f"over the {f['rss_before_mb']:.1f} MB before the load); on disk {f['on_disk_mb']:.1f} MB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
