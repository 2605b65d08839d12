"""The tracker: a faust-streaming app that reads every capture topic and keeps, per saga, its
timeline, its state and its end-to-end latency. It observes only: it never publishes a command.
It also reads the participants' retry notices (``capture.retries``): a saga whose next
participant says it failed and will try again is ``retrying``, attempt n of m.

Its table lives in memory and in its changelog topic (``pokesaga-tracker-sagas-changelog``):
a restarted tracker recovers the table from the changelog, then goes on from its committed
offsets, and serves the same timelines. It serves, on ``tracker_port``:

- ``GET /``: the web page (recent sagas, filter by state, a timeline per saga);
- ``GET /sagas?state=STATE&limit=N``: recent sagas, newest first (400 on a bad query);
- ``GET /sagas/{id}``: one saga's timeline (404 when the tracker never saw it, 400 for an id
  no saga can have);
- ``GET /metrics``: sagas started, completed by outcome, in flight, retrying, stuck, end-to-end
  latency, records skipped by reason.

A record it cannot place in a timeline (see ``timeline.parse``) is skipped and counted; a
timeline its table holds is restored (``timeline.restore``) before it is used, so nothing on
the topics or in the changelog can stop it observing or serving.

It keeps a finished saga for ``tracker_retention_hours`` after its outcome (see
``timeline.settled_at``), then forgets it: from its table (a tombstone in the changelog, which
Kafka compacts away) and from every index it holds in memory. Sagas with no outcome are kept.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from importlib import resources
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from capture.saga import CAPTURE
from capture.settings import Settings
from engine import kafka, unreadable
from tracker import timeline
from tracker.timeline import MAX_ID, REASONS, STATES, NotAnEvent

log = logging.getLogger(__name__)

started = Counter("pokesaga_tracker_sagas_started_total", "Sagas whose start event the tracker saw")
completed = Counter("pokesaga_tracker_sagas_completed_total", "Sagas that reached an outcome", ["outcome"])
in_flight = Gauge(
    "pokesaga_tracker_sagas_in_flight", "Sagas seen with no outcome yet (running, retrying, compensating, stuck)"
)
retrying = Gauge(
    "pokesaga_tracker_sagas_retrying", "Sagas whose next participant is retrying its step (attempt n of m), no outcome"
)
stuck = Gauge("pokesaga_tracker_sagas_stuck", "Sagas with no progress for longer than stuck_after, and no outcome")
latency = Histogram(
    "pokesaga_tracker_saga_latency_seconds",
    "End-to-end latency: start event time to outcome event time",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
retained = Gauge(
    "pokesaga_tracker_sagas_retained", "Sagas the tracker holds (running, or finished within the retention)"
)
forgotten = Counter("pokesaga_tracker_sagas_forgotten_total", "Sagas forgotten a retention after they finished")
skipped = Counter(
    "pokesaga_tracker_records_skipped_total",
    "Records on the topics that are not pokesaga events, by reason",
    ["reason"],
)
for _reason in REASONS:
    skipped.labels(_reason)  # every reason served from the start, at 0

MAX_LIMIT = 1000
APP_ID = "pokesaga-tracker"
INTERNAL_TOPICS = (f"{APP_ID}-sagas-changelog",)  # the table's changelog (faust names it so)
PARAMETERS = ("state", "limit")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(text: str) -> str:
    """A value from a request, quoted and cut short, for an error message."""
    return repr(text[:60]) + ("…" if len(text) > 60 else "")


def bad_query(query: Any, allowed: tuple[str, ...]) -> str | None:
    """Why the query string of a request is refused, or None: unknown or repeated parameters."""
    for name in query:
        if name not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            return f"unknown query parameter {_shown(name)}; expected {expected}"
        if len(query.getall(name)) > 1:
            return f"query parameter {name!r} given more than once"
    return None


def bad_saga_id(saga_id: str) -> str | None:
    """Why no saga can have this id, or None."""
    if not 1 <= len(saga_id) <= MAX_ID:
        return f"a saga id has 1 to {MAX_ID} characters, got {len(saga_id)}"
    if _CONTROL.search(saga_id):
        return f"a saga id has no control characters, got {_shown(saga_id)}"
    return None


def bad_limit(text: str) -> str | None:
    if not (re.fullmatch(r"[0-9]{1,4}", text, re.ASCII) and 1 <= int(text) <= MAX_LIMIT):
        return f"limit must be a whole number from 1 to {MAX_LIMIT}, got {_shown(text)}"
    return None


@functools.cache
def _page() -> str:
    """The page, its legend filled in from the saga's declaration (script-safe JSON)."""
    chain = {
        "states": list(timeline.STATES),
        "failures": sorted({cls.__name__ for step in CAPTURE.steps for cls in step.fails_with}),
        "compensations": sorted(timeline.COMPENSATING - {cls.__name__ for s in CAPTURE.steps for cls in s.fails_with}),
        "outcomes": sorted(timeline.OUTCOMES),
    }
    text = json.dumps(chain).replace("<", "\\u003c")
    page = resources.files("tracker").joinpath("page.html").read_text()
    return page.replace('/*CHAIN*/{"states": [], "failures": [], "compensations": [], "outcomes": []}', text)


def create_app(settings: Settings) -> faust.App:
    unreadable.install()  # before any consumer: a record the client cannot read comes out marked
    brokers = [f"kafka://{server}" for server in settings.bootstrap.split(",")]
    replication = settings.replication_factor or 1  # resolved by the caller (see cli check_replication)
    app = faust.App(
        APP_ID,
        broker=brokers,
        store="memory://",
        topic_partitions=settings.partitions,
        web_port=settings.tracker_port,
        web_bind=settings.metrics_host,
        web_router_enabled=False,  # faust's own routes: the raw table, unchecked keys
        web_tables_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=10.0,  # a killed tracker's partitions move on within seconds
        topic_replication_factor=replication,
        topic_disable_leader=True,  # no timer runs on the leader only: no leader topic to replicate
    )
    sagas = app.Table(
        "sagas", default=None, partitions=settings.partitions, extra_topic_configs=kafka.topic_configs(replication)
    )
    source = app.topic(
        *CAPTURE.topics,
        CAPTURE.retries_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    # Each stored timeline restored once: by key, with the stored value it was restored from
    # (the memory store hands back the same object until the key is written again).
    restored: dict[Any, tuple[Any, dict[str, Any]]] = {}

    def restore(key: Any, stored: Any) -> dict[str, Any]:
        hit = restored.get(key)
        if hit is not None and hit[0] is stored:
            return hit[1]
        found = timeline.restore(stored, key)
        if stored is not None:  # an id asked for and never seen is not remembered
            restored[key] = (stored, found)
        return found

    # The changelog partition each saga's timeline was last written to (its record's partition).
    partition_of: dict[Any, int] = {}

    def place(value: bytes | None, topic: str, headers: Any, partition: int) -> None:
        """Add one record to its saga's timeline, and count it; NotAnEvent when it has no place."""
        entry = timeline.parse(value, topic, headers)
        saga_id = entry["saga_id"]
        current = restore(saga_id, sagas.get(saga_id))
        if not timeline.add(current, entry, time.time()):
            return  # the same event again (a re-publication): nothing new
        sagas[saga_id] = current
        restored[saga_id] = (current, current)
        partition_of[saga_id] = partition
        if entry["type"] == timeline.TIMELINES.start:
            started.inc()
        elif entry["type"] in timeline.OUTCOMES:
            completed.labels(entry["type"]).inc()
            took = timeline.duration_ms(current)
            if took is not None and took >= 0:
                latency.observe(took / 1000)

    @app.agent(source)
    async def observe(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                place(event.value, message.topic, message.headers, message.partition)
            except NotAnEvent as refused:
                skipped.labels(refused.reason).inc()
            except Exception:  # a bug of ours must not stop the tracker observing every other saga
                log.exception("tracker: could not place %s[%s]@%s", message.topic, message.partition, message.offset)
                skipped.labels("error").inc()

    def timelines() -> list[dict[str, Any]]:
        found = [restore(key, stored) for key, stored in sagas.items()]
        if len(restored) > len(found):  # keys gone from the table (never, unless the changelog says so)
            for key in restored.keys() - set(sagas.keys()):
                del restored[key]
        return found

    @app.timer(interval=2.0)
    async def count() -> None:
        now = time.time()
        states = [timeline.state(t, now, settings.stuck_after) for t in timelines() if t["events"]]
        in_flight.set(sum(s in ("running", "retrying", "compensating", "stuck") for s in states))
        retrying.set(states.count("retrying"))
        stuck.set(states.count("stuck"))

    retention = settings.tracker_retention_hours * 3600

    def forget(key: Any) -> None:
        """``key`` gone from the table and the changelog, as ``del sagas[key]`` does inside an agent:
        a tombstone on the partition its timeline was written to (or that faust's store recovered
        it from), which a restarted tracker applies and Kafka's compaction drops."""
        recovered: dict[Any, int] = getattr(sagas.data, "_key_partition", {})
        partition = partition_of.pop(key, None)
        if partition is None:
            partition = recovered.get(key)
        sagas.send_changelog(partition, key, None, value_serializer="raw")
        sagas.data.pop(key, None)
        recovered.pop(key, None)
        restored.pop(key, None)

    @app.timer(interval=min(60.0, max(0.5, retention / 10)))
    async def forget_settled() -> None:
        """Forget the sagas settled longer ago than the retention: the tracker's memory stays flat."""
        now = time.time()
        for key, stored in list(sagas.items()):
            if timeline.expired(restore(key, stored), now, retention):
                forget(key)
                forgotten.inc()
        for key in partition_of.keys() - set(sagas.keys()):  # moved to another tracker by a rebalance
            del partition_of[key]
        retained.set(len(sagas))

    def views(state: str | None = None) -> list[dict[str, Any]]:
        now = time.time()
        found = [timeline.view(t, now, settings.stuck_after, restored=True) for t in timelines()]
        return timeline.newest_first(v for v in found if v["events"] and (state is None or v["state"] == state))

    # The page first: faust adds its own index at "/" when the server starts, after these; a
    # route added first is the one served (and aiohttp refuses a second "/" right after a first).
    @app.page("/")
    async def page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.html(_page())

    def refused(web: faust.web.View, why: str, status: int = 400) -> faust.web.Response:
        return web.json({"error": why}, status=status)

    @app.page("/sagas")
    async def list_sagas(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        query = request.query
        why = bad_query(query, PARAMETERS)
        if why is not None:
            return refused(web, why)
        state = query.get("state") or None
        if state is not None and state not in STATES:
            return refused(web, f"unknown state {_shown(state)}; expected one of {', '.join(STATES)}")
        text = query.get("limit", "50")
        why = bad_limit(text)
        if why is not None:
            return refused(web, why)
        found = views(state)
        listed = [{k: v for k, v in saga.items() if k != "events"} for saga in found[: int(text)]]
        return web.json({"sagas": listed, "count": len(found)})

    @app.page("/sagas/{saga_id}")
    async def one_saga(web: faust.web.View, request: faust.web.Request, saga_id: str) -> faust.web.Response:
        why = bad_saga_id(saga_id) or bad_query(request.query, ())
        if why is not None:
            return refused(web, why)
        found = timeline.view(restore(saga_id, sagas.get(saga_id)), time.time(), settings.stuck_after, restored=True)
        if not found["events"]:
            return refused(web, f"no saga {saga_id!r}: the tracker has seen no event of it", status=404)
        return web.json(found)

    @app.page("/metrics")
    async def metrics(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app


def run(settings: Settings) -> int:
    """Run the tracker in the foreground until SIGTERM or Ctrl-C."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
    return 0
