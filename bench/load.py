"""``pokesaga bench``: the production topology under load, and the null-relay ceiling.

Services run as separate processes (``--instances`` each); a driver publishes start events
at a target concurrency or rate and times each saga from publish to outcome. Per-step
figures come from each process's ``/metrics``; CPU and memory from ``/proc``. One JSON line.
``--stall-one`` (one saga's step stalls: do the others wait?) is in ``bench/stall.py``; ``--secure``
and ``--compare-secure`` (the same over TLS and SCRAM, each service as its own principal) in
``bench/secure.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench import storage
from bench.relay import CHAIN
from capture.bootstrap import GROUP_TOPICS
from capture.processes import ServiceProcess, stop_all
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from capture.starter import Outcome, TopicWatcher, start_event
from contracts import topics
from engine.broker import kafka
from engine.local.broker import free_port, provisioned
from engine.wire.envelope import Envelope

RELAY_GROUPS = {f"null-relay.{source}": [source] for source in CHAIN[:-1]}


@dataclass
class Options:
    sagas: int = 2000
    concurrency: int | None = 200
    rate: float | None = None
    partitions: int = 3
    instances: int = 1
    db: str = "sqlite"
    failure_mix: float = 0.0
    warmup: int = 100
    stall_one: bool = False  # bench.stall: one saga's step stalls, do the others wait?
    stall_step: str = "combat"
    stall_seconds: float = 10.0
    peer: str | None = None  # bench.peers: the same workload on a peer, after ours, and the ratios
    secure: bool = False  # bench.secure: on a private secured broker, each service as its own principal
    compare_secure: bool = False  # bench.secure: the plaintext listener of the same broker first, and the ratios


@dataclass(frozen=True)
class Access:
    """How the bench's clients reach the broker when it is not the administrator's address: the
    driver's bootstrap address, each service's environment (its own credentials), and what they
    are, for the report."""

    driver: str
    services: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    security: Mapping[str, Any] = field(default_factory=dict)
    broker_pid: int | None = None  # a local broker's process: its CPU over the timed sagas is reported


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    latency_of: dict[str, float] = field(default_factory=dict)  # saga id → seconds, publish to outcome
    partition_of: dict[str, int] = field(default_factory=dict)  # saga id → its start event's partition
    lead: Outcome | None = None  # the outcome of ``drive``'s ``lead`` saga, if it came
    lead_latency: float | None = None


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


EASY: dict[str, Any] = {"name": "Pidgey", "catch_rate": 255, "level": 20, "hp": 10}  # always caught


def workload(count: int, failure_mix: float, run: str) -> list[Envelope]:
    """Easy captures (each its own trainer: party slot 1) and, for ``failure_mix``, failures."""
    sagas = []
    failing_every = round(1 / failure_mix) if failure_mix > 0 else 0
    for i in range(count):
        trainer = {"name": f"bench-{run}-{i}"}
        if failing_every and i % failing_every == 0:
            pokemon: dict[str, Any] = {"name": "Rattata", "hp": 1} if i % 2 else {"name": "Voltorb"}
        else:
            pokemon = EASY
        sagas.append(start_event(f"bench-{run}-{i}", trainer, pokemon, source="pokesaga/bench"))
    return sagas


async def drive(
    bootstrap: str, sagas: list[Envelope], options: Options, lead: Envelope | None = None, lead_timeout: float = 0
) -> Run:
    """Publish at the target concurrency (or rate); time every saga from publish to outcome.
    ``lead``: one more saga, published before the others and timed apart from them; once the
    others are done, its outcome is awaited ``lead_timeout`` seconds more at most."""
    result, sent = Run(), {}
    acks: dict[str, asyncio.Future[Any]] = {}
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        async with TopicWatcher(bootstrap, topics.OUTCOMES) as watcher:
            pending = list(reversed(sagas))
            started = time.perf_counter()
            done = 0

            async def publish(envelope: Envelope) -> None:
                sent[envelope.sagaid] = time.perf_counter()
                acks[envelope.sagaid] = await producer.send(
                    topics.STATUS, envelope.to_json(), key=envelope.sagaid.encode()
                )

            async def send(count: int) -> None:
                for _ in range(min(count, len(pending))):
                    await publish(pending.pop())

            def lead_done(outcome: Outcome) -> bool:
                if lead is None or outcome.saga_id != lead.sagaid or result.lead is not None:
                    return False
                result.lead, result.lead_latency = outcome, time.perf_counter() - sent[lead.sagaid]
                return True

            if lead is not None:
                await publish(lead)
            if options.rate is None:
                await send(options.concurrency or 200)
            next_tick = time.perf_counter()
            while done < len(sagas):
                if options.rate is not None:
                    now = time.perf_counter()
                    due = int((now - started) * options.rate) - (len(sagas) - len(pending))
                    await send(due)
                    next_tick += 0.005
                for outcome in await watcher.poll(timeout_ms=5):
                    if lead_done(outcome):
                        continue
                    if outcome.saga_id in sent and outcome.saga_id not in result.outcomes:
                        result.latency_of[outcome.saga_id] = time.perf_counter() - sent[outcome.saga_id]
                        result.latencies.append(result.latency_of[outcome.saga_id])
                        result.outcomes[outcome.saga_id] = 1
                        done += 1
                        if options.rate is None:
                            await send(1)
                if time.perf_counter() - started > 600:
                    raise TimeoutError(f"only {done} of {len(sagas)} sagas reached an outcome in 600s")
            result.elapsed = time.perf_counter() - started
            waiting_until = time.perf_counter() + lead_timeout
            while lead is not None and result.lead is None and time.perf_counter() < waiting_until:
                for outcome in await watcher.poll(timeout_ms=50):
                    lead_done(outcome)
            others = {s.sagaid for s in sagas}
            types: Counter[str] = Counter(o[0].type for s, o in watcher.outcomes.items() if s in others)
            result.outcomes = types
        result.partition_of = {saga: (await ack).partition for saga, ack in acks.items()}
    finally:
        await producer.stop()
    return result


def e2e_figures(latencies: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of publish-to-outcome latencies, in milliseconds."""
    return {q: round(1000 * quantile(latencies, v), 1) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))} | {
        "max": round(1000 * max(latencies, default=0.0), 1)
    }


def scrape(port: int) -> dict[str, dict[str, Any]]:
    """Histograms of one process's /metrics: name → participant → (buckets, sum, count)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            who = sample.labels.get("participant", "")
            entry = found.setdefault(family.name, {}).setdefault(who, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if sample.name.endswith("_bucket"):
                entry["buckets"][float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] += sample.value
            elif sample.name.endswith("_count"):
                entry["count"] += sample.value
    return found


def _bucket_quantile(buckets: dict[float, float], q: float) -> float:
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return 0.0
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return float("inf")


def step_figures(ports: list[int]) -> dict[str, dict[str, float]]:
    merged: dict[str, dict[str, Any]] = {}
    for port in ports:
        for name, by in scrape(port).items():
            for who, entry in by.items():
                into = merged.setdefault(f"{who}:{name}", {"buckets": Counter(), "sum": 0.0, "count": 0.0})
                into["buckets"].update(entry["buckets"])
                into["sum"] += entry["sum"]
                into["count"] += entry["count"]
    figures: dict[str, dict[str, float]] = {}
    for key, entry in sorted(merged.items()):
        who, name = key.split(":", 1)
        short = "schedule_to_start" if "schedule_to_start" in name else "execution"
        if entry["count"]:
            figures.setdefault(who, {})[f"{short}_mean_ms"] = round(1000 * entry["sum"] / entry["count"], 2)
            figures[who][f"{short}_p99_le_ms"] = round(1000 * _bucket_quantile(entry["buckets"], 0.99), 1)
    return figures


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) a live process has used, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100.0  # USER_HZ
    return (int(stat[11]) + int(stat[12])) / ticks


def proc_figures(process: ServiceProcess) -> dict[str, float]:
    """CPU seconds and resident memory of a live process, from /proc."""
    pid = process.proc.pid if process.proc else 0
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"cpu_s": round(cpu_seconds(pid), 2), "rss_mb": round(rss_kb / 1024, 1)}


async def _wait_stable(bootstrap: str, groups: dict[str, list[str]], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not await kafka.groups_stable(bootstrap, groups):
        if time.monotonic() > deadline:
            raise TimeoutError("the bench processes did not join their consumer groups in time")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def topology(
    settings: Settings,
    options: Options,
    null_relay: bool,
    data: Path,
    extra_env: dict[str, str] | None = None,
    access: Access | None = None,
) -> AsyncIterator[list[tuple[ServiceProcess, int]]]:
    """The services (or the null relay) running, ``options.instances`` processes each, in their
    consumer groups; yields each process with its metrics port, and stops them all after.
    ``settings.bootstrap`` is where the bench looks as an administrator (topics, groups);
    ``access``: each service's own environment over it (its address and credentials)."""
    bootstrap = settings.bootstrap
    replication = settings.replication_factor
    await kafka.ensure_topics(bootstrap, CAPTURE.all_topics(), options.partitions, replication=replication)
    targets = [f"null-relay.{i}" for i in range(4)] if null_relay else list(SERVICES)
    processes: list[tuple[ServiceProcess, int]] = []
    try:  # an interrupt while they start stops those already started
        for target in targets:
            for n in range(options.instances):
                port = free_port()
                # New databases on a broker that may hold earlier traffic: measured as a fresh
                # deployment, not as a rebuild of what was there.
                env = {"POKESAGA_METRICS_PORT": str(port), "POKESAGA_REBUILD_NEW_DATABASES": "false"}
                env |= (extra_env or {}) | dict(access.services.get(target, {}) if access else {})
                process = ServiceProcess(target, settings, data / "logs", extra_env=env)
                process.log_path = data / "logs" / f"{target}-{n}.log"
                processes.append((process, port))
                process.start()
        await _wait_stable(bootstrap, RELAY_GROUPS if null_relay else GROUP_TOPICS)
        yield processes
    finally:
        stop_all([p for p, _ in processes])


async def measure(
    settings: Settings, options: Options, null_relay: bool, data: Path, access: Access | None = None
) -> dict[str, Any]:
    """One topology (the services, or the null relay) under the load of ``options``; ``access``:
    the driver and the services reach the broker that way (bench.secure)."""
    bootstrap = access.driver if access else settings.bootstrap
    async with topology(settings, options, null_relay, data, access=access) as processes:
        run_id = str(int(time.time() * 1000))
        total = options.sagas + options.warmup  # what the databases hold at the end
        if options.warmup:
            await drive(bootstrap, workload(options.warmup, options.failure_mix, f"w{run_id}"), options)
        before = [proc_figures(p)["cpu_s"] for p, _ in processes]  # start-up and warm-up: not counted
        broker_pid = access.broker_pid if access else None
        broker_before = cpu_seconds(broker_pid) if broker_pid else 0.0
        result = await drive(bootstrap, workload(options.sagas, options.failure_mix, run_id), options)
        broker_cpu = {}
        if broker_pid:  # the broker's CPU over the timed sagas, a saga
            spent = cpu_seconds(broker_pid) - broker_before
            broker_cpu["broker_cpu_ms_per_saga"] = round(1000 * spent / max(1, options.sagas), 3)
        per_process = {f"{p.target}#{i}": proc_figures(p) for i, (p, _) in enumerate(processes)}
        for figures, cpu in zip(per_process.values(), before, strict=True):
            figures["cpu_s_timed"] = round(figures["cpu_s"] - cpu, 2)
        timed_cpu = sum(figures["cpu_s_timed"] for figures in per_process.values())
        steps = {} if null_relay else step_figures([port for _, port in processes])
    lat = result.latencies
    stored = {} if null_relay or options.db != "sqlite" else {"storage": storage.measure(data, SERVICES, total)}
    return {
        "topology": "null-relay" if null_relay else "services",
        "sagas": options.sagas,
        "sagas_per_s": round(len(lat) / result.elapsed, 1),
        "e2e_ms": e2e_figures(lat),
        "cpu_ms_per_saga": round(1000 * timed_cpu / max(1, options.sagas), 3),
        **broker_cpu,
        "steps": steps,
        "processes": per_process,
        "outcomes": dict(result.outcomes),
    } | stored


async def bench(
    settings: Settings, options: Options, null_relay: bool, compare_null: bool, access: Access | None = None
) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="pokesaga-bench-"))
    update: dict[str, Any] = {"data_dir": data, "partitions": options.partitions}
    if options.db == "sqlite":  # new files in a temporary folder, whatever URLs the environment names
        update |= {f"{service}_db_url": None for service in SERVICES}
    settings = settings.model_copy(update=update)
    header = {
        "concurrency": options.concurrency if options.rate is None else None,
        "rate": options.rate,
        "partitions": options.partitions,
        "instances": options.instances,
        "db": options.db,
        "failure_mix": options.failure_mix,
    }
    try:
        if options.stall_one:
            from bench.stall import stall_one

            return header | await stall_one(settings, options, data)
        if access is not None:
            from bench.secure import secured

            return header | await secured(settings, options, data, access)
        if null_relay:
            return header | await measure(settings, options, True, data)
        figures = header | await measure(settings, options, False, data)
        if compare_null:
            ceiling = await measure(settings, options, True, data / "null")
            figures["null_relay"] = {k: ceiling[k] for k in ("sagas_per_s", "e2e_ms", "cpu_ms_per_saga", "processes")}
            figures["ratio_to_null"] = round(figures["sagas_per_s"] / ceiling["sagas_per_s"], 3)
        if options.peer:
            from bench import peers

            figures |= await peers.compare(options.peer, settings, options, data / "peer", figures)
        return figures
    finally:
        shutil.rmtree(data, ignore_errors=True)


def run(settings: Settings, options: Options, null_relay: bool, compare_null: bool) -> int:
    """Provision a private broker unless one is configured, bench, print one JSON line."""
    if options.secure or options.compare_secure:
        from bench import secure

        return secure.run(settings, options)
    if settings.kafka_bootstrap_servers:
        print(f"pokesaga bench: using {settings.kafka_bootstrap_servers}: its capture topics get bench traffic",
              file=sys.stderr)  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="pokesaga-bench-broker-") as state,
        provisioned(settings, state=Path(state)) as address,
    ):
        if not settings.kafka_bootstrap_servers:
            print(f"pokesaga bench: private broker at {address}", file=sys.stderr)
        live = settings.model_copy(update={"kafka_bootstrap_servers": address})
        figures = asyncio.run(bench(live, options, null_relay, compare_null))
    print(json.dumps(figures, sort_keys=False))
    return 0
