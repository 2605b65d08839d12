"""The tracker: a faust-streaming app that reads every capture topic and keeps, per saga, its
timeline, its state and its end-to-end latency. It observes only: it never publishes a command.

Its table lives in memory and in its changelog topic (``pokesaga-tracker-sagas-changelog``):
a restarted tracker recovers the table from the changelog, then goes on from its committed
offsets, and serves the same timelines. It serves, on ``tracker_port``:

- ``GET /``: the web page (recent sagas, filter by state, a timeline per saga);
- ``GET /sagas?state=STATE&limit=N``: recent sagas, newest first (400 on a bad query);
- ``GET /sagas/{id}``: one saga's timeline (404 when the tracker never saw it);
- ``GET /metrics``: sagas started, completed by outcome, in flight, stuck, end-to-end latency.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from contracts import topics
from runtime.settings import Settings
from tracker import timeline
from tracker.timeline import STATES, NotAnEvent

started = Counter("pokesaga_tracker_sagas_started_total", "Sagas whose start event the tracker saw")
completed = Counter("pokesaga_tracker_sagas_completed_total", "Sagas that reached an outcome", ["outcome"])
in_flight = Gauge("pokesaga_tracker_sagas_in_flight", "Sagas seen with no outcome yet (running, compensating, stuck)")
stuck = Gauge("pokesaga_tracker_sagas_stuck", "Sagas with no progress for longer than stuck_after, and no outcome")
latency = Histogram(
    "pokesaga_tracker_saga_latency_seconds",
    "End-to-end latency: start event time to outcome event time",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
skipped = Counter("pokesaga_tracker_records_skipped_total", "Records on the topics that are not pokesaga events")

MAX_LIMIT = 1000


def create_app(settings: Settings) -> faust.App:
    brokers = [f"kafka://{server}" for server in settings.bootstrap.split(",")]
    app = faust.App(
        "pokesaga-tracker",
        broker=brokers,
        store="memory://",
        topic_partitions=settings.partitions,
        web_port=settings.tracker_port,
        web_bind=settings.metrics_host,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=10.0,  # a killed tracker's partitions move on within seconds
    )
    sagas = app.Table("sagas", default=None, partitions=settings.partitions)
    source = app.topic(*topics.ALL, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def observe(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                entry = timeline.parse(event.value, event.message.topic)
            except NotAnEvent:
                skipped.inc()
                continue
            saga_id = entry["saga_id"]
            current = sagas.get(saga_id) or timeline.new(saga_id)
            if not timeline.add(current, entry, time.time()):
                continue  # the same event again (a re-publication): nothing new
            sagas[saga_id] = current
            if entry["type"] == "PokemonEncountered":
                started.inc()
            elif entry["type"] in timeline.OUTCOMES:
                completed.labels(entry["type"]).inc()
                took = timeline.duration_ms(current)
                if took is not None:
                    latency.observe(took / 1000)

    @app.timer(interval=2.0)
    async def count() -> None:
        now = time.time()
        states = [timeline.state(t, now, settings.stuck_after) for t in sagas.values()]
        in_flight.set(sum(s in ("running", "compensating", "stuck") for s in states))
        stuck.set(states.count("stuck"))

    def views(state: str | None = None) -> list[dict[str, Any]]:
        now = time.time()
        found = [timeline.view(t, now, settings.stuck_after) for t in sagas.values()]
        found = [v for v in found if state is None or v["state"] == state]
        return sorted(found, key=lambda v: (v["started_at"] or "", v["saga_id"]), reverse=True)

    @app.page("/sagas")
    async def list_sagas(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        state = request.query.get("state") or None
        if state is not None and state not in STATES:
            return web.json({"error": f"unknown state {state!r}; expected one of {', '.join(STATES)}"}, status=400)
        text = request.query.get("limit", "50")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            return web.json({"error": f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}"}, status=400)
        unknown = sorted(set(request.query) - {"state", "limit"})
        if unknown:
            return web.json({"error": f"unknown query parameter {unknown[0]!r}; expected state, limit"}, status=400)
        found = views(state)
        listed = [{k: v for k, v in saga.items() if k != "events"} for saga in found[: int(text)]]
        return web.json({"sagas": listed, "count": len(found)})

    @app.page("/sagas/{saga_id}")
    async def one_saga(web: faust.web.View, request: faust.web.Request, saga_id: str) -> faust.web.Response:
        found = sagas.get(saga_id)
        if found is None:
            return web.json({"error": f"no saga {saga_id!r}: the tracker has seen no event of it"}, status=404)
        return web.json(timeline.view(found, time.time(), settings.stuck_after))

    @app.page("/metrics")
    async def metrics(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/")
    async def page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.html(resources.files("tracker").joinpath("page.html").read_text())

    return app


def run(settings: Settings) -> int:
    """Run the tracker in the foreground until SIGTERM or Ctrl-C."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
    return 0
