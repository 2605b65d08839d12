"""The tracker checks what it restores and what clients claim (issue 21, item 4).

Its changelog, its topics and its requests are written by anyone: a record in its changelog that
makes no table entry is skipped when it recovers (and counted), a time a client wrote never
decides when a saga is forgotten (the tracker's own clock does), a start the services refused
is ``refused`` and forgotten, a compensation dead-lettered on its data is ``needs_operator``, and
every bad request parameter is a 400 with one line saying why.

A broker of its own and the tracker alone: every record is written here by hand, as any client
can write it, so what the tracker holds is exactly what this module wrote.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from capture.processes import stop_all
from capture.settings import Settings
from capture.tracking import INTERNAL_TOPICS
from contracts import topics
from engine.broker import kafka
from engine.local.broker import free_port
from engine.ops import deadletters
from engine.wire.deadletter import DLQ_HEADER_PREFIX, dead_letters
from tests.conftest import new_broker
from tests.e2e.conftest import Cluster
from tests.hostile import encode, envelope
from tests.support import eventually, http_get, metric_samples

pytestmark = pytest.mark.no_database  # the tracker reads topics only: once, on the SQLite pass

RETENTION_SECONDS = 4
CHANGELOG = INTERNAL_TOPICS[0]
SKIPPED = "pokesaga_tracker_changelog_entries_skipped_total"
FAR = "9999-12-31T23:59:59Z"


class Tracker:
    def __init__(self, running: Cluster, port: int) -> None:
        self.running = running
        self.port = port
        self.bootstrap = running.settings.bootstrap

    def start(self) -> None:
        self.running.start(
            "tracker",
            POKESAGA_TRACKER_PORT=str(self.port),
            POKESAGA_TRACKER_RETENTION_HOURS=str(RETENTION_SECONDS / 3600),
        )

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.port, path)

    def skipped(self, reason: str) -> float:
        return metric_samples(self.port).get((SKIPPED, (("reason", reason),)), -1.0)

    async def serving(self) -> None:
        async def up() -> bool:
            return self.get("/sagas")[0] == 200

        await eventually(up, timeout=90, what="the tracker to serve")

    async def shows(self, saga_id: str, *states: str, timeout: float = 90) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def seen() -> bool:
            status, body = self.get(f"/sagas/{saga_id}")
            found.update(body if status == 200 else {})
            return status == 200 and body["state"] in states

        await eventually(seen, timeout=timeout, what=f"the tracker to show {saga_id} {' or '.join(states)}")
        return found

    async def forgets(self, saga_id: str, timeout: float = 60) -> None:
        async def gone() -> bool:
            return self.get(f"/sagas/{saga_id}")[0] == 404

        await eventually(gone, timeout=timeout, what=f"the tracker to forget {saga_id}")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:
    data = tmp_path_factory.mktemp("trust")
    with new_broker(data / "broker") as bootstrap:
        running = Cluster(Settings(kafka_bootstrap_servers=bootstrap, data_dir=data), {})
        found = Tracker(running, free_port())
        found.start()
        try:
            yield found
        finally:
            stop_all(list(running.processes.values()))
    codes = {n: p.proc.returncode if p.proc else None for n, p in running.processes.items()}
    assert set(codes.values()) <= {0}, f"the tracker did not stop cleanly: {codes} (logs in {data / 'logs'})"


async def produce(
    bootstrap: str,
    records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]],
    partition: int | None = None,
) -> None:
    """``(topic, key, value, headers)`` records, in order, with a plain Kafka producer: any client."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers, partition=partition)
    finally:
        await producer.stop()


def event(saga: str, event_id: str, type_: str, cause: str | None = None, time: str | None = None) -> bytes:
    """An event of the saga as any client can write it (its time now, unless given)."""
    data: dict[str, Any] = {"trainer": {"name": "Mallory"}, "pokemon": {"name": "Pidgey", "level": 5}}
    if type_ == "PokemonParalyzed":
        data["previous_status"] = "HEALTHY"
    elif type_ in ("PokemonFainted", "CaptureFailed"):
        data |= {"reason": "fainted", "failed_step": "combat", "detail": "", "undone": ["status"]}
    doc = envelope(saga, event_id, type_, data=data, time=time or datetime.now(UTC).isoformat())
    if cause is not None:
        doc["causationid"] = cause
    return encode(doc)


def letter(saga: str, source: str, reason: str) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """A dead letter on ``source``'s dead-letter topic, with the headers a participant writes."""
    headers = [
        (DLQ_HEADER_PREFIX + "reason", reason.encode()),
        (DLQ_HEADER_PREFIX + "topic", source.encode()),
        (DLQ_HEADER_PREFIX + "partition", b"0"),
        (DLQ_HEADER_PREFIX + "offset", b"0"),
        (DLQ_HEADER_PREFIX + "consumer", b"capture.status"),
    ]
    return (dead_letters(source), saga.encode(), b"{}", headers)


def on(topic: str, saga: str, value: bytes) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
    return (topic, saga.encode(), value, [])


def cursor(document: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


BAD_REQUESTS = [
    f"/sagas?after={cursor([10**400, 'x'])}",  # a 500 on the code before: an integer too large for a float
    f"/sagas?after={cursor([1e308 * 10, 'x'])}",  # Infinity
    f"/sagas?after={'9' * 400}",
    "/sagas?after=-1",
    "/sagas?after=abc",
    f"/sagas?after={cursor('[' * 700)}",
    "/sagas?limit=99999999999999999999999999999999",
    "/sagas?limit=1001",
    "/sagas?limit=0",
    "/sagas?limit=-1",
    "/sagas?limit=abc",
    "/sagas?limit=1.5",
    "/sagas?limit=",
    "/sagas?limit=1&limit=2",
    "/sagas?state=nowhere",
    "/sagas?state=RUNNING",
    "/sagas?since=99999999999999999999999",
    "/sagas?since=-1",
    "/sagas?since=abc",
    "/sagas?until=0000-01-01T00:00:00Z",
    "/sagas?since=2026-12-03T14:00:00Z&until=2026-12-03T13:00:00Z",
    "/sagas?q=%00",
    f"/sagas?q={'x' * 201}",
    f"/sagas?trainer={'x' * 201}",
    "/sagas?saga=%1f",
    "/sagas?reason=%7f",
    "/sagas?unknown=1",
    "/overview?limit=1",
    "/sagas/x?limit=1",
    "/sagas/%00",
    f"/sagas/{'x' * 201}",
    "/sagas/x/records?after=1",
]


@pytest.mark.parametrize("path", BAD_REQUESTS)
async def test_every_bad_request_parameter_is_a_400_with_a_reason(tracker: Tracker, path: str) -> None:
    await tracker.serving()
    status, body = tracker.get(path)
    assert status == 400, (status, body)
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"], body
    assert "\n" not in body["error"]


@pytest.mark.parametrize("state", ["refused", "needs_operator"])
async def test_the_new_states_are_states_a_list_asks_for(tracker: Tracker, state: str) -> None:
    await tracker.serving()
    status, body = tracker.get(f"/sagas?state={state}")
    assert status == 200 and state in body["counts"], body
    assert state in tracker.get("/overview")[1]["states"]


async def test_far_future_times_are_forgotten_on_the_trackers_clock(tracker: Tracker) -> None:
    run = uuid.uuid4().hex[:6]
    finished, fragment = f"far-{run}", f"far-fragment-{run}"
    await produce(
        tracker.bootstrap,
        [
            on(topics.STATUS, finished, event(finished, f"s-{run}", "PokemonEncountered", time=FAR)),
            on(topics.OUTCOMES, finished, event(finished, f"o-{run}", "CaptureFailed", cause=f"s-{run}", time=FAR)),
            # events with no start (a re-publication, or a client's): settled on the code before at
            # their written time, year 9999: never forgotten
            on(topics.COMBAT, fragment, event(fragment, f"p-{run}", "PokemonParalyzed", cause="gone", time=FAR)),
        ],
    )
    view = await tracker.shows(finished, "failed")
    assert view["ended_at"].startswith("9999-12-31")
    await tracker.shows(fragment, "running", "stuck")
    await tracker.forgets(finished)
    await tracker.forgets(fragment)


async def test_a_refused_start_is_shown_refused_and_forgotten_after_retention(tracker: Tracker) -> None:
    run = uuid.uuid4().hex[:6]
    saga = f"refused-{run}"
    start = event(saga, f"s-{run}", "PokemonEncountered", time=FAR)
    await produce(tracker.bootstrap, [on(topics.STATUS, saga, start)])
    await tracker.shows(saga, "running")  # no service here: nothing answers it
    await produce(tracker.bootstrap, [letter(saga, topics.STATUS, "conflicting_copy: another event with its id")])
    view = await tracker.shows(saga, "refused")  # "running", then "stuck" for ever on the code before
    assert view["waiting_on"] is None and view["dead_letters"][0]["source"] == topics.STATUS
    status, listed = tracker.get("/sagas?state=refused")
    assert status == 200 and saga in [s["saga_id"] for s in listed["sagas"]]
    await tracker.forgets(saga)


async def test_a_saga_whose_compensation_was_dead_lettered_needs_an_operator_until_it_has_an_outcome(
    tracker: Tracker,
) -> None:
    run = uuid.uuid4().hex[:6]
    saga, finished = f"operator-{run}", f"done-{run}"
    s, p, f = f"s-{run}", f"p-{run}", f"f-{run}"
    await produce(
        tracker.bootstrap,
        [
            on(topics.STATUS, saga, event(saga, s, "PokemonEncountered")),
            on(topics.COMBAT, saga, event(saga, p, "PokemonParalyzed", cause=s)),
            on(topics.FAILURES, saga, event(saga, f, "PokemonFainted", cause=p)),
            letter(saga, topics.FAILURES, "compensation_failed: IntegrityError: the status row was refused"),
            on(topics.STATUS, finished, event(finished, f"s2-{run}", "PokemonEncountered")),
            on(topics.OUTCOMES, finished, event(finished, f"o2-{run}", "CaptureFailed", cause=f"s2-{run}")),
        ],
    )
    view = await tracker.shows(saga, "needs_operator")
    assert view["waiting_on"] is None and view["dead_letters"][0]["reason"].startswith("compensation_failed")
    status, listed = tracker.get("/sagas?state=needs_operator")
    assert status == 200 and [s["saga_id"] for s in listed["sagas"]] == [saga]
    await tracker.forgets(finished)  # seen with it, finished: forgotten after the retention
    assert (await tracker.shows(saga, "needs_operator", timeout=5))["outcome"] is None  # kept: not finished
    # The operator fixes the cause and replays the dead letter: the compensation goes on, the saga ends.
    await produce(tracker.bootstrap, [on(topics.OUTCOMES, saga, event(saga, f"o-{run}", "CaptureFailed", cause=f))])
    await tracker.shows(saga, "failed")
    await tracker.forgets(saga)


async def test_a_tracker_restarted_over_a_poisoned_changelog_recovers_and_counts_what_it_skipped(
    tracker: Tracker,
) -> None:
    run = uuid.uuid4().hex[:6]
    kept, after = f"kept-{run}", f"after-{run}"
    await produce(tracker.bootstrap, [on(topics.STATUS, kept, event(kept, f"s-{run}", "PokemonEncountered"))])
    await tracker.shows(kept, "running", "stuck")
    assert tracker.skipped("bad_key") == 0 and tracker.skipped("bad_value") == 0
    poison: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (CHANGELOG, b'{"a": 1}', b'{"saga_id": "x"}', []),  # JSON, unhashable: the code before never recovered
        (CHANGELOG, b"null", b"{}", []),  # JSON, no string (a compacted topic takes no record with no key)
        (CHANGELOG, b'"ok"', b"not json", []),
        (CHANGELOG, b'"ok2"', b"[1, 2]", []),  # JSON, no timeline
        (CHANGELOG, b'"ok3"', b'{"__faust": {"ns": "nowhere"}}', []),  # what faust would make a model of
        (CHANGELOG, b'"\\u0000"', b"{}", []),  # a string no saga id can be
        (CHANGELOG, b"\xff\xfe", b"{}", []),  # not UTF-8: the partition's last record
    ]
    await produce(tracker.bootstrap, poison, partition=0)
    tracker.running.stop("tracker")
    tracker.start()
    await tracker.shows(kept, "running", "stuck")  # recovered, and serving
    await produce(tracker.bootstrap, [on(topics.STATUS, after, event(after, f"a-{run}", "PokemonEncountered"))])
    await tracker.shows(after, "running", "stuck")  # and observing

    async def counted() -> bool:
        return (tracker.skipped("bad_key"), tracker.skipped("bad_value")) == (4, 3)

    await eventually(counted, timeout=30, what="4 bad keys and 3 bad values counted")

    async def listed() -> bool:  # the recovered timeline in the index the list reads, as the new one
        status, body = tracker.get("/sagas?limit=1000")
        return status == 200 and {s["saga_id"] for s in body["sagas"]} >= {kept, after}

    await eventually(listed, timeout=30, what="both sagas listed")
    status, body = tracker.get("/sagas?limit=1000")
    assert not {"ok", "ok2", "ok3", "x", "\x00"} & {s["saga_id"] for s in body["sagas"]}
    assert (tracker.skipped("bad_key"), tracker.skipped("bad_value")) == (4, 3)  # each counted once


async def test_dead_letters_replayed_one_saga_at_a_time_are_each_re_published_once(tracker: Tracker) -> None:
    """An operator replays one saga's dead letters (``--saga``, as the NEEDS AN OPERATOR line
    says), then another's: each is re-published exactly once, and a replay never passes over a
    letter it did not select (on the code before, the first ``--saga`` moved the replay position
    past every letter it read: the second saga's replay re-published nothing, for good). The
    markers a replay writes are no dead letters to ``dlq list`` or to the tracker."""
    run = uuid.uuid4().hex[:6]
    a, b, c, last = (f"replay-{run}-{x}" for x in ("a", "b", "c", "last"))
    source, dlq = topics.DELIVERY, dead_letters(topics.DELIVERY)

    def refused(saga: str, offset: int, consumer: str = "delivery") -> Any:
        topic, key, _, headers = letter(saga, source, "compensation_failed: ValueError: bad data after 3 attempts")
        given = {DLQ_HEADER_PREFIX + "offset": str(offset).encode(), DLQ_HEADER_PREFIX + "consumer": consumer.encode()}
        return (topic, key, encode({"saga": saga}), [(k, given.get(k, v)) for k, v in headers])

    # a's record dead-lettered by two consumers (one record, re-published once), b's between them
    await produce(tracker.bootstrap, [refused(a, 1), refused(b, 2), refused(a, 1, "other"), refused(c, 3)], partition=0)

    async def replay(saga: str | None = None) -> list[str | None]:
        return [letter.key for letter in await deadletters.republish(tracker.bootstrap, dlq, saga=saga)]

    assert await replay(b) == [b]
    assert await replay(a) == [a]  # [] on the code before: passed over by b's replay
    assert await replay(b) == []
    assert await replay() == [c]
    assert await replay() == []
    records, _ = await kafka.read_to_end(tracker.bootstrap, [source])
    replayed = [r.key.decode() for r in records if r.key and r.key.decode() in (a, b, c)]
    assert sorted(replayed) == sorted([a, b, c]), replayed  # each once
    listed = [d for d in await deadletters.list_dead_letters(tracker.bootstrap, dlq) if d.key in (a, b, c)]
    assert sorted(d.key or "" for d in listed) == sorted([a, a, b, c])  # the markers are no dead letters

    await produce(tracker.bootstrap, [refused(last, 4)], partition=0)  # after the markers, on their partition

    async def placed() -> bool:
        return tracker.get(f"/sagas/{last}")[0] == 200

    await eventually(placed, timeout=90, what=f"the tracker to place {last}'s dead letter")
    shown = {saga: len(tracker.get(f"/sagas/{saga}")[1]["dead_letters"]) for saga in (a, b, c)}
    assert shown == {a: 2, b: 1, c: 1}, shown


async def test_a_replay_marker_a_client_forges_hides_no_dead_letter(tracker: Tracker) -> None:
    """Markers say which dead letters a replay re-published: only an empty record naming an
    earlier record of its own partition is one. Forged ones — naming a letter still to come, on
    another partition, or carrying a value — hide nothing: each letter is listed and re-published."""
    run = uuid.uuid4().hex[:6]
    sagas = [f"forge-{run}-{n}" for n in range(3)]
    source, dlq = topics.COMBAT, dead_letters(topics.COMBAT)
    records, _ = await kafka.read_to_end(tracker.bootstrap, [dlq])
    end = max((r.offset for r in records if r.partition == 0), default=-1) + 1
    marker = DLQ_HEADER_PREFIX + "replayed"
    forged = [
        (dlq, b"x", b"", [(marker, f"0@{end + 3}".encode())]),  # a letter still to come
        (dlq, b"x", b"", [(marker, f"1@{end}".encode())]),  # another partition's
        (dlq, b"x", b"{}", [(marker, f"0@{end + 4}".encode())]),  # with a value: a dead letter, not a marker
    ]
    await produce(tracker.bootstrap, forged, partition=0)
    letters = [letter(saga, source, "invalid_data: no") for saga in sagas]
    await produce(tracker.bootstrap, letters, partition=0)
    listed = {d.key for d in await deadletters.list_dead_letters(tracker.bootstrap, dlq)}
    assert set(sagas) <= listed
    replayed = [letter.key for letter in await deadletters.republish(tracker.bootstrap, dlq)]
    assert set(sagas) <= set(replayed), replayed
