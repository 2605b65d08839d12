"""The tracker: a faust-streaming app that reads every topic of the saga it is handed and keeps,
per saga, its timeline, its state and its end-to-end latency. It observes only: it never publishes
a command. It also reads the participants' retry notices (the saga's retries topic): a saga whose
next participant says it failed and will try again is ``retrying``, attempt n of m.

It imports no saga: ``run(saga, settings, display)`` and ``create_app`` take the declaration (and
what a saga shows beyond it, ``tracking.Display``), and everything saga-specific is built from them
once per app (``tracking.Tracking``): the topics it reads, the graph on its page, its app id
(``<saga name>-tracker``, the consumer group) and its changelog.

Its table lives in memory and in its changelog topic (``<saga name>-tracker-sagas-changelog``):
a restarted tracker recovers the table from the changelog, then goes on from its committed
offsets, and serves the same timelines. A saga's changelog record is written once per commit,
before the offsets (``engine.tracker.held``), and a finished saga's timeline is held packed.
It serves, on ``tracker_port`` (all but ``/metrics`` behind a login when ``tracker_token`` is set: see
``engine.tracker.login``):

- ``GET /``: the web page (recent sagas, filter by state, a timeline per saga);
- ``GET /overview``: the choreography with its live figures, and how far behind its topics the
  tracker reads (``read``: records read, the staleness of the last one; see ``Freshness``);
- ``GET /sagas?state=STATE&limit=N``: recent sagas, newest first (400 on a bad query);
- ``GET /sagas/{id}``: one saga's timeline (404 when the tracker never saw it, 400 for an id
  no saga can have);
- ``GET /metrics``: sagas started, completed by outcome, in flight, retrying, stuck, end-to-end
  latency, staleness, records skipped by reason, changelog entries skipped on recovery by reason.

A record it cannot place in a timeline (see ``timeline.parse``) is skipped and counted; a
changelog record that makes no table entry (see ``engine.tracker.changelog``) is skipped on recovery and
counted; a timeline its table holds is restored (``timeline.restore``) before it is used, so
nothing on the topics or in the changelog can stop it observing or serving.

It keeps a finished saga (or a refused start) for ``tracker_retention_hours`` after it last saw
anything of it, on its own clock (see ``timeline.settled_at``: never a time a client wrote), then
forgets it: from its table (a tombstone in the changelog, which Kafka compacts away) and from
every index it holds in memory. Sagas with no outcome (running, or needing an operator) are kept.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from importlib import resources
from typing import Any, cast

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from engine.broker import kafka, security, unreadable
from engine.observe.timeline import NOTICE, REASONS, WAITING_STATES, NotAnEvent, duration_ms
from engine.saga import Saga
from engine.settings import Settings
from engine.tracker import api, login
from engine.tracker.broker import Broker, shown
from engine.tracker.changelog import SagaTable
from engine.tracker.figures import Freshness
from engine.tracker.held import Held, WriteAtCommit
from engine.tracker.index import Index
from engine.tracker.tracking import Display, Tracking
from engine.wire.deadletter import is_republish_marker
from engine.wire.notices import rfc3339_from_epoch

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
staleness = Gauge(
    "pokesaga_tracker_staleness_seconds",
    "Seconds from the last record's timestamp (when it was written) to when the tracker read it",
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

RECONCILE_EVERY = 30.0  # seconds between full comparisons of the index with the table


@functools.cache
def _template() -> str:
    return resources.files("engine.tracker").joinpath("page.html").read_text()


def page_for(tracking: Tracking) -> str:
    """The page, its legend and columns filled in from the saga's declaration (script-safe JSON)."""
    text = json.dumps(tracking.chain).replace("<", "\\u003c")
    return _template().replace("/*CHAIN*/null", text)


def milliseconds(seconds: float | None) -> float | None:
    """A record's timestamp as the Kafka client gives it (milliseconds): faust gives it in seconds."""
    return None if seconds is None else seconds * 1000


def faust_credentials(options: dict[str, Any]) -> faust.types.auth.CredentialsT | None:
    """The security options every other client takes (engine.broker.security), as faust's credentials."""
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            ssl_context=options.get("ssl_context"),
            mechanism=options["sasl_mechanism"],
        )
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


def create_app(saga: Saga, settings: Settings, display: Display | None = None) -> faust.App:
    """The tracker of ``saga``, as a faust app (``run`` runs it); ``display`` is what it shows of
    the saga beyond its declaration (see ``tracking.Display``: every part has a default)."""
    tracking = Tracking(saga, display)
    timeline = tracking.timelines
    dead_letter_topics = frozenset(tracking.dead_letter_topics)
    html = page_for(tracking)
    unreadable.install()  # before any consumer: a record the client cannot read comes out marked
    brokers = [f"kafka://{server}" for server in settings.bootstrap.split(",")]
    replication = settings.replication_factor or 1  # resolved by the caller (capture's check_replication, __main__)
    app = faust.App(
        tracking.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(security.options_for(settings.bootstrap)),
        store="memory://",
        topic_partitions=settings.partitions,
        web_port=settings.tracker_port,
        web_bind=settings.metrics_host,
        web_router_enabled=False,  # faust's own routes: the raw table, unchecked keys
        web_tables_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # its changelog records, batched (faust's default sends each alone: a request, a write
        # to the socket, each); a commit flushes the producer first, so they wait no longer
        producer_linger=0.05,
        producer_max_batch_size=512 * 1024,
        broker_session_timeout=10.0,  # a killed tracker's partitions move on within seconds
        topic_replication_factor=replication,
        topic_disable_leader=True,  # no timer runs on the leader only: no leader topic to replicate
    )
    sagas = cast(
        SagaTable,
        app.tables.add(  # as app.Table does, with a table that reads back its changelog with care
            SagaTable(
                app,
                name="sagas",
                default=None,
                beacon=app.tables.beacon,
                partitions=settings.partitions,
                extra_topic_configs=kafka.topic_configs(replication),
            )
        ),
    )
    source = app.topic(
        *tracking.topics,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    index = Index(timeline, settings.stuck_after)
    broker = Broker(settings.bootstrap, saga.groups)

    held = Held(sagas, lambda stored, key: timeline.restore(stored, key, now=time.time()))
    app.sensors.add(WriteAtCommit(held))
    indexed: set[Any] = set()  # every key of the table the index holds (a row, or none: no event yet)

    def place(message: Any, value: bytes | None) -> None:
        """Add one record to its saga's timeline, and count it; NotAnEvent when it has no place."""
        topic, partition, now = message.topic, message.partition, time.time()
        letter = topic in dead_letter_topics
        if letter and is_republish_marker(message.headers, value):
            return  # a republish's note that a dead letter was re-published: no dead letter
        if letter:
            entry = timeline.parse_dead_letter(
                message.key, topic, message.headers, partition, message.offset, milliseconds(message.timestamp)
            )
        else:
            entry = timeline.parse(value, topic, message.headers, partition, message.offset)
        saga_id = entry["saga_id"]
        current = held.get(saga_id)
        added = timeline.add_dead_letter(current, entry, now) if letter else timeline.add(current, entry, now)
        if not added:
            return  # the same event or dead letter again (a re-publication): nothing new
        current = held.put(saga_id, current, partition)
        kind = None if letter else entry["type"]  # a dead letter is no event: it has no type
        fresh = [e for e in current["events"] if e["id"] == entry["id"]] if kind not in (None, NOTICE) else []
        index.put(current, fresh)
        indexed.add(saga_id)
        if kind == timeline.start:
            started.inc()
        elif kind in timeline.outcomes:
            completed.labels(kind).inc()
            took = duration_ms(current)
            if took is not None and took >= 0:
                latency.observe(took / 1000)

    freshness = Freshness()

    @app.agent(source)
    async def observe(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            message = event.message
            freshness.read(message.timestamp, time.time())
            try:
                place(message, event.value)
            except NotAnEvent as refused:
                skipped.labels(refused.reason).inc()
            except Exception:  # a bug of ours must not stop the tracker observing every other saga
                log.exception("tracker: could not place %s[%s]@%s", message.topic, message.partition, message.offset)
                skipped.labels("error").inc()

    last_full = 0.0

    async def reconcile() -> None:
        """The index made to hold what the table holds: timelines a restarted tracker recovered from
        its changelog, or a rebalance brought or took away. In chunks: the loop keeps serving."""
        nonlocal last_full
        now = time.monotonic()
        if len(sagas) == len(indexed) and now - last_full < RECONCILE_EVERY:
            return
        last_full = now
        keys = set(sagas.keys())
        for i, key in enumerate(keys - indexed):
            if sagas.get(key) is not None:
                index.restored(held.get(key))
            if i % 2000 == 1999:
                await asyncio.sleep(0)
        for key in indexed - keys:
            index.forget(key)
        indexed.clear()
        indexed.update(keys)

    @app.timer(interval=2.0)
    async def count() -> None:
        await reconcile()
        states = index.overview(time.time())["states"]
        in_flight.set(sum(states[s] for s in WAITING_STATES))
        retrying.set(states["retrying"])
        stuck.set(states["stuck"])
        if freshness.staleness is not None:
            staleness.set(freshness.staleness)

    @app.timer(interval=2.0)
    async def read_lag() -> None:
        await broker.read_lag()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_broker(_app: Any, *_args: Any, signal: Any = None, **_kwargs: Any) -> None:
        await broker.close()

    retention = settings.tracker_retention_hours * 3600

    def forget(key: Any) -> None:
        held.forget(key)
        index.forget(key)
        indexed.discard(key)

    @app.timer(interval=min(60.0, max(0.5, retention / 10)))
    async def forget_settled() -> None:
        """Forget the sagas settled longer ago than the retention: the tracker's memory stays flat."""
        now = time.time()
        for i, key in enumerate(list(sagas.keys())):
            # as it is now (an event may have come while the sweep yielded): the index's row says
            # when it settled; a timeline the index holds no row of is read
            row = index.rows.get(key)
            if row is not None:
                settled = row.settled
            else:
                settled = timeline.settled_at(held.get(key)) if sagas.get(key) is not None else None
            if settled is not None and now - settled > retention:
                forget(key)
                forgotten.inc()
            if i % 2000 == 1999:  # the pages and the agent go on meanwhile
                await asyncio.sleep(0)
        held.moved_away()
        retained.set(len(sagas))

    # The page first: faust adds its own index at "/" when the server starts, after these; a
    # route added first is the one served (and aiohttp refuses a second "/" right after a first).
    token = settings.tracker_token.get_secret_value() if settings.tracker_token is not None else None

    def logged_in(handler: Any) -> Any:
        """``handler``, answering only a request that carries the console's token (engine.tracker.login)."""

        @functools.wraps(handler)
        async def checked(web: faust.web.View, request: faust.web.Request, **kwargs: Any) -> faust.web.Response:
            if not login.allowed(request.headers.get("Authorization"), token):
                return web.json({"error": login.ASKED}, status=401, headers={"WWW-Authenticate": login.CHALLENGE})
            return await handler(web, request, **kwargs)

        return checked

    @app.page("/")
    @logged_in
    async def page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.html(html)

    def refused(web: faust.web.View, why: str, status: int = 400) -> faust.web.Response:
        return web.json({"error": why}, status=status)

    @app.page("/overview")
    @logged_in
    async def overview(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        why = api.bad_query(request.query, ())
        if why is not None:
            return refused(web, why)
        return web.json(overview_of(tracking, index, broker, time.time()) | {"read": freshness.figures()})

    @app.page("/sagas")
    @logged_in
    async def list_sagas(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        try:
            query = api.search(request.query, timeline.states, tracking.fields)
        except api.Refused as why:
            return refused(web, str(why))
        return web.json(index.search(query, time.time()))

    def one(saga_id: str, request: faust.web.Request) -> dict[str, Any] | str:
        """The saga's view, or why it is refused (a 404's text starts with "no saga")."""
        why = api.bad_saga_id(saga_id) or api.bad_query(request.query, ())
        if why is not None:
            return why
        found = timeline.view(held.get(saga_id), time.time(), settings.stuck_after, restored=True)
        if not found["events"] and not found["dead_letters"]:
            return f"no saga {saga_id!r}: the tracker has seen no event of it"
        return found

    @app.page("/sagas/{saga_id}")
    @logged_in
    async def one_saga(web: faust.web.View, request: faust.web.Request, saga_id: str) -> faust.web.Response:
        found = one(saga_id, request)
        if isinstance(found, str):
            return refused(web, found, status=404 if found.startswith("no saga") else 400)
        down = {g for g, figures in broker.lag.items() if figures["members"] == 0}
        return web.json(found | {"commands": tracking.commands(found, down)})

    @app.page("/sagas/{saga_id}/records")
    @logged_in
    async def records(web: faust.web.View, request: faust.web.Request, saga_id: str) -> faust.web.Response:
        found = one(saga_id, request)
        if isinstance(found, str):
            return refused(web, found, status=404 if found.startswith("no saga") else 400)
        events = [e for e in found["events"] if "offset" in e]
        letters = found["dead_letters"]
        wanted = [(e["topic"], e["partition"], e["offset"]) for e in events + letters]
        values = await broker.records(wanted)

        def record(item: dict[str, Any], check_id: bool) -> dict[str, Any]:
            value = shown(values.get((item["topic"], item["partition"], item["offset"])))
            if check_id and not (isinstance(value, dict) and value.get("id") == item["id"]):
                value = None  # another record there now (the topic made again): not this event's
            where = {k: item[k] for k in ("topic", "partition", "offset")}
            return ({"id": item["id"]} if check_id else {}) | where | {"found": value is not None, "value": value}

        return web.json(
            {"records": [record(e, True) for e in events], "dead_letters": [record(d, False) for d in letters]}
        )

    @app.page("/metrics")
    async def metrics(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app


def overview_of(tracking: Tracking, index: Index, broker: Broker, now: float) -> dict[str, Any]:
    """``GET /overview``: the choreography from the declaration, with the live figures on it."""
    figures = index.overview(now)
    per_minute = figures.pop("per_minute")
    participants = {
        name: counts | broker.lag.get(name, {}) | {"down": broker.lag.get(name, {}).get("members") == 0}
        for name, counts in figures.pop("participants").items()
    }
    return {
        "at": rfc3339_from_epoch(now),
        "saga": tracking.saga.name,
        "nodes": tracking.graph["nodes"],
        "edges": [edge | {"per_minute": per_minute.get(edge["event"], 0)} for edge in tracking.graph["edges"]],
        "participants": participants,
        "lag": {"read_at": broker.read_at, "error": broker.error},
        **figures,
    }


def run(saga: Saga, settings: Settings, display: Display | None = None) -> int:
    """Run the tracker of ``saga`` in the foreground until SIGTERM or Ctrl-C."""
    app = create_app(saga, settings, display)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
    return 0
