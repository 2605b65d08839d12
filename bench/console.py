"""``pokesaga bench --console``: the tracker's console API with 100,000 sagas held.

N synthetic sagas, real envelopes of real events along the paths the services take, are
published straight to the topics (no services run); the real tracker reads them in its own
process; then each request the console makes is timed over HTTP (p50, p95, max), and the
overview is polled for a minute as the page does (its worst wait, the tracker's timers
included). Also how long the tracker took to read them all, and its resident memory as it
filled. One JSON line.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import shutil
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bench.load import proc_figures, quantile
from capture.demo import TRAINERS
from capture.processes import ServiceProcess, stop_all
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import start_event
from capture.tracking import APP_ID, INTERNAL_TOPICS
from contracts import events, pokedex
from engine.broker import kafka
from engine.events import Event
from engine.local.broker import BrokerError, free_port, provisioned
from engine.observe.timeline import canonical_rfc3339
from engine.wire.envelope import wrap

SPREAD = 50 * 60.0  # start times over the last 50 minutes
TRAINER_COUNT = 5000
WARMUP, TIMED = 5, 40  # requests of each kind not timed, then timed
POLLED = 65.0  # seconds of /overview every 100 ms (fewer with fewer sagas): the minute timers run within
SEED = 15

Steps = list[tuple[type[Event], dict[str, Any]]]
PARALYZED = (events.PokemonParalyzed, {"previous_status": "HEALTHY"})
WEAKENED = (events.PokemonWeakened, {"hp_before": 40, "damage": 39})
CAUGHT = (events.PokemonCaught, {"ball": "Poke Ball", "shakes": 3})


def failed(
    forward: Steps, failure: type[Event], reason: str, step: str, unwind: list[tuple[type[Event], str]]
) -> Steps:
    """The steps done, the failure, then each compensation (newest step first) adding the step it
    undid to ``undone``: every step but the one that failed, which did nothing to undo."""
    why: dict[str, Any] = {"reason": reason, "failed_step": step}
    path, undone = [*forward, (failure, why)], tuple[str, ...]()
    for compensation, undoes in unwind:
        undone = (*undone, undoes) if undoes != step else undone
        path.append((compensation, why | {"undone": undone}))
    return path


# Each path of the mix: the state it leaves the saga in, its share, the events after the start.
MIX: tuple[tuple[str, float, Steps], ...] = (
    ("delivered", 0.55, [PARALYZED, WEAKENED, CAUGHT, (events.PokemonDelivered, {"location": "party", "slot": 1})]),
    ("failed", 0.16, failed([PARALYZED, WEAKENED], events.PokemonBrokeFree, "broke_free", "pokeball",
                            [(events.PokemonHealed, "combat"), (events.CaptureFailed, "status")])),
    ("failed", 0.08, failed([PARALYZED], events.PokemonFainted, "fainted", "combat",
                            [(events.CaptureFailed, "status")])),
    ("failed", 0.06, failed([], events.ParalysisFailed, "electric_type_immune", "status",
                            [(events.CaptureFailed, "status")])),
    ("failed", 0.04, failed([PARALYZED, WEAKENED], events.OutOfPokeballs, "out_of_pokeballs", "pokeball",
                            [(events.PokemonHealed, "combat"), (events.CaptureFailed, "status")])),
    ("failed", 0.06, failed([PARALYZED, WEAKENED, CAUGHT], events.DeliveryFailed, "party_and_pc_full", "delivery",
                            [(events.PokemonReleased, "pokeball"), (events.PokemonHealed, "combat"),
                             (events.CaptureFailed, "status")])),
    ("running", 0.02, []),
    ("running", 0.02, [PARALYZED]),
    ("running", 0.01, [PARALYZED, WEAKENED]),
)  # fmt: skip
SOURCE = {cls.__name__: f"{CAPTURE.name}/{s.name}" for s in CAPTURE.steps for cls in (*s.succeeds_with, *s.fails_with)}
SOURCE |= {cls.__name__: f"{CAPTURE.name}/{c.name}" for c in CAPTURE.compensations for cls in c.publishes}
ELECTRIC = tuple(s.name for s in pokedex.SPECIES.values() if "Electric" in s.types)


def say(message: str) -> None:
    print(f"pokesaga bench: {message}", file=sys.stderr, flush=True)


def sagas(count: int, now: float, rng: random.Random) -> Iterator[tuple[str, int, list[tuple[str, bytes]]]]:
    """Each saga's id, its path in MIX, and its records (topic, value), oldest saga first."""
    paths = rng.choices(range(len(MIX)), weights=[share for _, share, _ in MIX], k=count)
    for i, which in enumerate(paths):
        saga_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        n = rng.randrange(TRAINER_COUNT)
        trainer = {"name": f"{TRAINERS[n % len(TRAINERS)]}-{n:04d}"}
        reason = MIX[which][2][-1][1].get("reason") if MIX[which][2] else None
        species = rng.choice(ELECTRIC if reason == "electric_type_immune" else pokedex.NAMES)
        at = datetime.fromtimestamp(now - SPREAD + SPREAD * i / count, UTC)
        start = start_event(saga_id, trainer, {"name": species, "level": rng.randint(5, 70)}, "pokesaga/consolebench")
        envelope = start.model_copy(update={"time": at})
        records = [(events.PokemonEncountered.topic, envelope.to_json())]
        for cls, extra in MIX[which][2]:
            at += timedelta(seconds=rng.uniform(0.01, 0.3))
            event = cls.model_validate({"trainer": start.data["trainer"], "pokemon": start.data["pokemon"]} | extra)
            envelope = wrap(event, saga_id=saga_id, source=SOURCE[cls.__name__], causation_id=envelope.id, time=at)
            records.append((cls.topic, envelope.to_json()))
        yield saga_id, which, records


async def publish(
    bootstrap: str, count: int, now: float, rate: float | None = None, sent: list[int] | None = None
) -> tuple[dict[str, int], str, int]:
    """Publish ``count`` sagas (``rate`` a second, each saga's records at once, when given; as fast as
    it can else); returns the sagas per state, a failed saga with the most events, and how many
    records were published. ``sent[0]`` counts the records sent so far."""
    states: Counter[str] = Counter()
    deepest, longest, records = "", 0, 0
    sent = sent if sent is not None else [0]
    producer = kafka.producer(bootstrap, linger_ms=20 if rate is None else 5, max_batch_size=256 * 1024)
    made = sagas(count, now, random.Random(SEED))
    if rate is not None:  # made first: the bench spends no CPU making envelopes while the tracker reads
        made = iter(list(made))
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i, (saga_id, which, produced) in enumerate(made, 1):
            if rate is not None and (ahead := started + (i - 1) / rate - time.monotonic()) > 0:
                await asyncio.sleep(ahead)
            states[MIX[which][0]] += 1
            if MIX[which][0] == "failed" and len(produced) > longest:
                deepest, longest = saga_id, len(produced)
            for topic, value in produced:
                pending.append(await producer.send(topic, value, key=saga_id.encode()))
            records += len(produced)
            sent[0] = records
            if i % 10000 == 0 or i == count or (rate is not None and i % max(1, int(rate)) == 0):
                await asyncio.gather(*pending)
                pending.clear()
            if i % 10000 == 0 or i == count:
                say(f"published {i}/{count} sagas ({records} records)")
    finally:
        await producer.stop()
    return dict(states), deepest, records


def get(connection: http.client.HTTPConnection, path: str) -> tuple[float, Any]:
    """One request on a kept-alive connection: seconds to the whole answer, and its JSON."""
    started = time.perf_counter()
    connection.request("GET", path)
    answer = connection.getresponse()
    body = answer.read()
    took = time.perf_counter() - started
    if answer.status != 200:
        raise RuntimeError(f"GET {path}: {answer.status} {body[:300]!r}")
    return took, json.loads(body)


def overview(port: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        return dict(get(connection, "/overview")[1])
    finally:
        connection.close()


def held(port: int) -> int:
    """The sagas the tracker holds (0 while it does not answer yet)."""
    try:
        return int(overview(port)["retained"])
    except (OSError, http.client.HTTPException):
        return 0


async def caught_up(bootstrap: str, ends: dict[TopicPartition, int]) -> bool:
    """The tracker has committed every record published: it has read them all."""
    try:
        done = await kafka.committed_offsets(bootstrap, APP_ID, ends)
    except KafkaError:
        return False
    return all(done.get(tp, 0) >= end for tp, end in ends.items())


async def load(bootstrap: str, tracker: ServiceProcess, port: int, count: int) -> tuple[float, list[list[float]]]:
    """Wait until the tracker holds ``count`` sagas and has read every record; returns the seconds
    since it started, and its memory as it filled: [sagas held, RSS in MB] at each quarter."""
    ends = await kafka.end_offsets(bootstrap, CAPTURE.all_topics())
    started = time.monotonic()
    deadline, shown, quarters = started + 120 + count / 50, 0.0, [count * q / 4 for q in range(1, 5)]
    growth: list[list[float]] = []
    while True:
        if not tracker.alive:
            raise ChildProcessError(f"the tracker exited ({tracker.proc and tracker.proc.returncode})")
        retained = held(port)
        if quarters and retained >= quarters[0]:
            growth.append([retained, proc_figures(tracker)["rss_mb"]])
            while quarters and retained >= quarters[0]:
                quarters.pop(0)
        if retained == count and await caught_up(bootstrap, ends):
            return time.monotonic() - started, growth
        if time.monotonic() > deadline:
            raise TimeoutError(f"the tracker held {retained} of {count} sagas after {deadline - started:.0f}s")
        if time.monotonic() - shown > 5:
            say(f"the tracker holds {retained}/{count} sagas ({time.monotonic() - started:.0f}s)")
            shown = time.monotonic()
        await asyncio.sleep(0.5)


def requests(port: int, count: int, now: float, saga_id: str) -> dict[str, str]:
    """The console's requests, by name: the overview, the list filtered every way, a page halfway
    down the list (its cursor found by following ``next``), one saga."""
    since = canonical_rfc3339(datetime.fromtimestamp(now - 30 * 60, UTC))
    until = canonical_rfc3339(datetime.fromtimestamp(now - 20 * 60, UTC))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    step, cursor, skipped = min(1000, max(1, count // 20)), None, 0
    while skipped < count // 2:
        _, page = get(
            connection, "/sagas?" + urllib.parse.urlencode({"limit": step} | ({"after": cursor} if cursor else {}))
        )
        cursor, skipped = page["next"], skipped + len(page["sagas"])
        if cursor is None:
            break
    connection.close()
    return {
        "overview": "/overview",
        "list": "/sagas",
        "failed": "/sagas?state=failed",
        "search": "/sagas?q=misty-01",  # a trainer prefix
        "reason": "/sagas?reason=broke",
        "range_10m": "/sagas?" + urllib.parse.urlencode({"since": since, "until": until}),
        "deep_page": "/sagas?" + urllib.parse.urlencode({"after": cursor} if cursor else {}),
        "one_saga": f"/sagas/{saga_id}",
    }


def timings(port: int, paths: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each request ``TIMED`` times after ``WARMUP``: p50, p95, max (ms), and what a list counted."""
    figures = {}
    for name, path in paths.items():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        took: list[float] = []
        body: dict[str, Any] = {}
        for i in range(WARMUP + TIMED):
            seconds, body = get(connection, path)
            if i >= WARMUP:
                took.append(seconds)
        connection.close()
        figures[name] = {q: round(1000 * quantile(took, v), 1) for q, v in (("p50", 0.5), ("p95", 0.95))}
        figures[name]["max"] = round(1000 * max(took), 1)
        if "count" in body:
            figures[name]["matched"] = body["count"]
        say(f"{name}: p50 {figures[name]['p50']} ms, p95 {figures[name]['p95']} ms  ({path[:70]})")
    return figures


def polled(port: int, seconds: float) -> dict[str, float]:
    """``/overview`` every 100 ms for ``seconds``, as the page refreshes: what a user waits at worst,
    the tracker's periodic work (its retention sweep runs every minute) included."""
    connection, took = http.client.HTTPConnection("127.0.0.1", port, timeout=30), []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        took.append(get(connection, "/overview")[0])
        time.sleep(0.1)
    connection.close()
    figures = {q: round(1000 * quantile(took, v), 1) for q, v in (("p50", 0.5), ("p99", 0.99))}
    slow = sum(t > 0.1 for t in took)
    say(f"/overview polled {len(took)} times in {seconds:.0f}s: max {1000 * max(took):.0f} ms, {slow} over 100 ms")
    return {"seconds": round(seconds, 1), "requests": len(took)} | figures | {
        "max": round(1000 * max(took), 1), "over_100ms": slow
    }  # fmt: skip


def read(port: int) -> dict[str, Any]:
    """What the tracker says it has read: records, the staleness of the last one (``/overview``)."""
    return dict(overview(port).get("read") or {"records": 0, "staleness_s": None})  # none: an older tracker


def window(samples: list[tuple[float, int, int, float | None]], seconds: float) -> list[list[float]]:
    """Per ``seconds`` of the run: its end, the greatest staleness and lag (records) sampled in it."""
    found: dict[int, list[float]] = {}
    for at, sent, done, stale in samples:
        slot = found.setdefault(int(at // seconds), [0.0, 0.0])
        slot[0], slot[1] = max(slot[0], stale or 0.0), max(slot[1], sent - done)
    return [[(k + 1) * seconds, round(v[0], 2), int(v[1])] for k, v in sorted(found.items())]


async def paced(
    settings: Settings, tracker: ServiceProcess, port: int, count: int, rate: float, now: float
) -> tuple[dict[str, int], str, int, dict[str, Any]]:
    """``count`` sagas published at ``rate`` a second while the tracker reads them, as the services
    publish at their maximum: how far behind it reads, sampled every second from its ``/overview``
    (the staleness of the last record it read; its lag, records published and not read yet), until
    it has read them all. It keeps up when it has read them all within 5 s of the last publish."""
    bootstrap = settings.bootstrap
    deadline = time.monotonic() + 120
    while not await kafka.groups_stable(bootstrap, [APP_ID]):  # its partitions assigned: it reads
        if not tracker.alive or time.monotonic() > deadline:
            raise TimeoutError(f"the tracker did not join its group (alive: {tracker.alive})")
        await asyncio.sleep(0.5)
    while True:  # and it answers
        try:
            read(port)
            break
        except (OSError, http.client.HTTPException):
            await asyncio.sleep(0.5)
    say(f"the tracker reads; publishing {count} sagas at {rate:g} a second")
    sent, samples, started = [0], [], time.monotonic()

    async def timed() -> tuple[tuple[dict[str, int], str, int], float]:
        published = await publish(bootstrap, count, now, rate, sent)
        return published, time.monotonic() - started

    publishing = asyncio.create_task(timed())
    deadline, published_s, records = started + 120 + count / rate + count / 50, None, 0
    while True:
        await asyncio.sleep(1.0)
        if not tracker.alive:
            raise ChildProcessError(f"the tracker exited ({tracker.proc and tracker.proc.returncode})")
        done = await asyncio.to_thread(read, port)
        at = time.monotonic() - started
        samples.append((at, sent[0], int(done["records"]), done["staleness_s"]))
        if publishing.done() and published_s is None:
            (mix, deepest, records), published_s = publishing.result()
            say(f"published in {published_s:.1f}s; the tracker is {sent[0] - done['records']} records behind")
        if published_s is not None and done["records"] >= records:
            drained_s = at
            break
        if int(at) % 10 == 0:
            say(f"{at:.0f}s: staleness {done['staleness_s']} s, {sent[0] - done['records']} records behind")
        if time.monotonic() > deadline:
            publishing.cancel()
            raise TimeoutError(f"the tracker read {done['records']} of {sent[0]} records in {at:.0f}s")
    during = [x for x in samples if x[0] <= published_s]
    half = during[len(during) // 2 :] or samples[-1:]
    stale = [x[3] or 0.0 for x in half]
    lag = [float(x[1] - x[2]) for x in half]
    end = during[-1] if during else samples[-1]
    figures = {
        "rate_sagas_per_s": rate,
        "publish_s": round(published_s, 1),
        "offered_records_per_s": round(records / published_s),
        "read_records_per_s": round(records / drained_s),
        "second_half": {
            "staleness_s": {q: round(quantile(stale, v), 2) for q, v in (("p50", 0.5), ("p99", 0.99))}
            | {"max": round(max(stale), 2)},
            "lag_records": {"p50": int(quantile(lag, 0.5)), "max": int(max(lag))},
        },
        "at_last_publish": {"staleness_s": end[3], "lag_records": end[1] - end[2]},
        "drained_s": round(drained_s - published_s, 1),
        "keeps_up": drained_s - published_s <= 5.0,
        "by_10s": window(samples, 10.0),  # [seconds, staleness max, lag max]
    }
    return mix, deepest, records, figures


async def fresh(bootstrap: str) -> None:
    """Refuse a broker whose topics hold records already: the tracker would count them too."""
    ends = await kafka.end_offsets(bootstrap, CAPTURE.all_topics())
    if any(ends.values()) or any([await kafka.topic_exists(bootstrap, t) for t in INTERNAL_TOPICS]):
        raise BrokerError(
            f"{bootstrap} already holds capture records or a tracker's table: the tracker would count them "
            "too; use a fresh broker (unset KAFKA_BOOTSTRAP_SERVERS: the bench starts a private one)"
        )


async def measure(settings: Settings, count: int, data: Path, rate: float | None = None) -> dict[str, Any]:
    bootstrap = settings.bootstrap
    await kafka.ensure_topics(
        bootstrap, CAPTURE.all_topics(), settings.partitions, replication=settings.replication_factor
    )
    await fresh(bootstrap)
    now = time.time()
    port = free_port()
    tracker = ServiceProcess("tracker", settings, data / "logs", extra_env={"POKESAGA_TRACKER_PORT": str(port)})
    pacing: dict[str, Any] | None = None
    try:
        if rate is None:  # a backlog: every record published, then the tracker reads them
            started = time.monotonic()
            mix, deepest, records = await publish(bootstrap, count, now)
            published = time.monotonic() - started
            say(f"published in {published:.1f}s; the tracker reads them (log: {tracker.log_path})")
            tracker.start()
        else:  # published at a pace while the tracker reads
            tracker.start()
            say(f"the tracker starts (log: {tracker.log_path})")
            mix, deepest, records, pacing = await paced(settings, tracker, port, count, rate, now)
            published = pacing["publish_s"]
        ingest_s, growth = await load(bootstrap, tracker, port, count)
        if pacing is not None:  # from the first record published
            ingest_s = pacing["publish_s"] + pacing["drained_s"]
        loaded = proc_figures(tracker)
        freshness = read(port)
        say(f"the tracker read {records} records in {ingest_s:.1f}s; RSS {loaded['rss_mb']} MB; timing requests")
        requested = timings(port, requests(port, count, now, deepest))
        polling = polled(port, min(POLLED, count / 1000))
        last = overview(port)
        after = proc_figures(tracker)
    finally:
        stop_all([tracker])
    slowest = max(requested, key=lambda name: requested[name]["p95"])
    return {
        "scenario": "console",
        "sagas": count,
        "records": records,
        "partitions": settings.partitions,
        "mix": mix,
        "publish_s": round(published, 1),
        "ingest_s": round(ingest_s, 1),
        "ingest_records_per_s": round(records / ingest_s),
        "ingest_cpu_s": loaded["cpu_s"],  # the tracker's, from its start (~3 s of it faust's start)
        "records_per_cpu_s": round(records / max(0.01, loaded["cpu_s"])),
        "staleness_s": freshness["staleness_s"],  # of the last record read: written to read
        "paced": pacing,
        "tracker": {"retained": last["retained"], "states": last["states"]} | after,
        "rss_mb_by_sagas": growth,
        "requests": requested,
        "overview_polled": polling,
        "slowest": {"request": slowest, "p95_ms": requested[slowest]["p95"]},
        "over_100ms_p95": sorted(name for name, figures in requested.items() if figures["p95"] > 100),
    }


def run(settings: Settings, count: int, rate: float | None = None) -> int:
    """Provision a private broker unless one is configured, bench the console, print one JSON line."""
    data, keep = Path(tempfile.mkdtemp(prefix="pokesaga-consolebench-")), False
    try:
        with provisioned(settings, state=data / "broker") as address:
            say(f"{'using' if settings.kafka_bootstrap_servers else 'private broker at'} {address}")
            live = settings.model_copy(update={"kafka_bootstrap_servers": address, "data_dir": data})
            figures = asyncio.run(measure(live, count, data, rate))
    except Exception:
        keep = (data / "logs").exists()  # the tracker ran: its log says why
        if keep:
            say(f"failed: the tracker's log is kept in {data / 'logs'}")
        raise
    finally:
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(figures))
    return 0
