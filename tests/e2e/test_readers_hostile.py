"""The readers of the topics (the tracker, ``pokesaga trace``, ``pokesaga dlq list``, the rebuild's
history) skip and count what they cannot place, and keep serving; the tracker's API answers 400
to any bad parameter.

Records are written with a plain Kafka producer, as any client's would. The services do not
run: one saga's events are written as the services would write them, next to records no
service would ever write, keyed with that saga's id so they land on its partitions. The
module runs on a broker of its own, so what the tracker counts is exactly what it wrote.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capture.bootstrap import PARTICIPANTS
from capture.processes import ServiceProcess
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import publish, start_event
from contracts import topics
from contracts.events import CaptureFailed, ParalysisFailed, PokemonEncountered, Step
from engine.local.broker import free_port
from engine.wire import notices as retrynotice
from engine.wire.envelope import Envelope, wrap
from engine.worker import rebuild as history
from engine.worker.history import key as history_key
from tests import hostile
from tests.conftest import new_broker
from tests.e2e.conftest import pokesaga
from tests.support import Samples, eventually, http_get, metric_samples

pytestmark = pytest.mark.no_database  # the tracker and the readers read topics only

SKIPPED = "pokesaga_tracker_records_skipped_total"
MARK = "pokesaga/status"  # the source the rebuild's reader looks for: every hostile record carries it


class Tracker:
    """The tracker as its own process (``pokesaga run tracker``), and what it serves."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.process = ServiceProcess(
            "tracker", settings, logs, {"POKESAGA_TRACKER_PORT": str(self.port), "POKESAGA_STUCK_AFTER": "600"}
        )

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.port, path)

    def metrics(self) -> Samples:
        return metric_samples(self.port)

    def start(self) -> None:
        self.process.start()

        async def serving() -> bool:
            return self.get("/metrics")[0] == 200

        asyncio.run(eventually(serving, timeout=120, what="the tracker to serve /metrics"))

    def stop(self) -> None:
        code = self.process.stop()
        assert code == 0, f"the tracker did not stop cleanly ({code}); log in {self.process.log_path}"


@dataclass(frozen=True)
class Written:
    """One saga's events as the services write them, and the records no service writes."""

    saga: str
    events: list[Envelope]
    skipped: dict[str, int]  # reason -> records the tracker must skip for it
    keyed: int  # hostile records keyed with the saga's id, on the saga topics


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:
    data = tmp_path_factory.mktemp("hostile-readers")
    with new_broker(data / "broker") as bootstrap:
        running = Tracker(Settings(kafka_bootstrap_servers=bootstrap, data_dir=data), data / "logs")
        running.start()
        try:
            yield running
        finally:
            running.stop()


def a_failed_saga(saga: str) -> list[Envelope]:
    """An Electric-type Pokémon, which cannot be paralyzed: start, failure, outcome."""
    start = start_event(saga, {"name": "Zed"}, {"name": "Pikachu"})
    encountered = PokemonEncountered.model_validate(start.data)
    failure = ParalysisFailed(
        trainer=encountered.trainer, pokemon=encountered.pokemon, reason="electric_type", failed_step=Step.STATUS
    )
    failed = wrap(failure, saga_id=saga, source="pokesaga/status", causation_id=start.id)
    outcome = CaptureFailed.model_validate(failure.model_dump() | {"undone": ["status"]})
    return [start, failed, wrap(outcome, saga_id=saga, source="pokesaga/status.compensations", causation_id=failed.id)]


def hostile_records(event: Envelope, topic: str) -> list[bytes | None]:
    """What any client can write on ``topic``: each carries the rebuild reader's mark."""
    forged = json.loads(event.to_json()) | {"id": f"forged-{topic}", "source": MARK, "causationid": f"cause-{topic}"}
    noise = random.Random(topic).randbytes(300)
    return [
        hostile.encode(forged | {"time": 12345}),  # an envelope but for its time, a number
        b"\xff" + noise + MARK.encode() + noise,  # random bytes
        b'{"source": "' + MARK.encode() + b'", "a": ' + hostile.nested(5000) + b"}",  # 5000 levels deep
        b'{"source": "' + MARK.encode() + b'", "n": 1' + b"0" * 4999 + b"}",  # an integer 5000 digits long
    ]


@pytest.fixture(scope="module")
def written(tracker: Tracker) -> Written:
    bootstrap = tracker.settings.bootstrap
    saga = f"zap-{uuid.uuid4().hex[:6]}"
    events = a_failed_saga(saga)
    start, failed, _ = events
    key = saga.encode()
    for topic, event in ((topics.STATUS, start), (topics.FAILURES, failed)):
        records = hostile_records(event, topic)
        asyncio.run(hostile.produce(bootstrap, topic, [(key, value) for value in records]))
        # A valid envelope of the saga, from the mark's source, that the client could not read as written.
        forged = json.loads(event.to_json()) | {"id": f"unreadable-{topic}", "source": MARK, "causationid": "x"}
        hostile.produce_unreadable(bootstrap, topic, saga, json.dumps(forged))
    asyncio.run(hostile.produce(bootstrap, topics.STATUS, [(key, None)]))  # a record with no value
    asyncio.run(hostile.produce(bootstrap, CAPTURE.retries_topic, [(key, value) for value in hostile_notices(start)]))
    for event in events:  # the saga, after every hostile record on its partitions
        asyncio.run(hostile.produce(bootstrap, event_topic(event), [(key, event.to_json())]))
    skipped = {"not_cloudevent": 2, "not_json": 7, "unreadable": 2, "empty": 1, "invalid_data": 3, "wrong_topic": 1}
    return Written(saga, events, skipped, keyed=sum(skipped.values()))


def hostile_notices(start: Envelope) -> list[bytes | None]:
    """Retry notices of the saga any client can write on the retries topic, and one a participant
    could have written (the last, about the start event: kept, but the saga's outcome stands)."""
    real = retrynotice.notice(
        start, participant="status", source="capture/status", attempt=1, maximum_attempts=5,
        next_attempt_at=time.time() + 3600, error="TransientFault: \x1b[2J injected",
    )  # fmt: skip
    document = json.loads(real.to_json())
    return [
        hostile.encode(document | {"id": "n1", "data": document["data"] | {"participant": "team-rocket"}}),
        hostile.encode(document | {"id": "n2", "data": document["data"] | {"attempt": "1"}}),
        hostile.encode(document | {"id": "n3", "data": document["data"] | {"next_attempt_at": 1e12}}),
        start.to_json(),  # a saga event on the notices' topic
        random.Random("notices").randbytes(300),
        real.to_json(),
    ]


def event_topic(event: Envelope) -> str:
    return {"PokemonEncountered": topics.STATUS, "ParalysisFailed": topics.FAILURES}.get(event.type, topics.OUTCOMES)


async def test_the_tracker_skips_and_counts_what_it_cannot_place_and_shows_the_saga(
    tracker: Tracker, written: Written
) -> None:
    found: dict[str, Any] = {}

    async def shown() -> bool:
        status, body = tracker.get(f"/sagas/{written.saga}")
        found.update(body if status == 200 else {})
        return status == 200 and body["state"] == "failed" and len(body["events"]) == 3

    await eventually(shown, timeout=120, what=f"the tracker to show {written.saga} failed")
    assert [e["id"] for e in found["events"]] == [e.id for e in written.events]  # none forged, in causal order
    assert [e["time"] for e in found["events"]] == [json.loads(e.to_json())["time"] for e in written.events]
    assert found["trainer"] == "Zed" and found["pokemon"] == "Pikachu" and found["outcome"] == "CaptureFailed"
    assert found["duration_ms"] is not None and found["duration_ms"] >= 0 and found["waiting_on"] is None
    assert found["events"][-1]["undone"] == ["status"] and found["events"][1]["reason"] == "electric_type"
    assert list(found["retries"]) == ["status"] and found["retrying"] is None  # a notice does not undo an outcome

    async def counted() -> bool:
        samples = tracker.metrics()
        return all(samples[(SKIPPED, (("reason", r),))] == n for r, n in written.skipped.items())

    await eventually(counted, timeout=60, what=f"the tracker to count {written.skipped} skipped")
    samples = tracker.metrics()
    assert sum(v for (name, _), v in samples.items() if name == SKIPPED) == written.keyed  # nothing else
    assert samples[("pokesaga_tracker_sagas_started_total", ())] == 1
    assert samples[("pokesaga_tracker_sagas_completed_total", (("outcome", "CaptureFailed"),))] == 1

    status, listing = tracker.get("/sagas")
    assert status == 200 and [s["saga_id"] for s in listing["sagas"]] == [written.saga] and listing["count"] == 1
    assert listing["sagas"][0]["state"] == "failed" and listing["sagas"][0]["started_at"] == found["started_at"]
    assert tracker.get("/sagas?state=failed&limit=1")[1]["count"] == 1
    status, page = tracker.get("/")
    assert status == 200 and "<table" in page


BAD = [
    "/sagas?state=bogus",
    "/sagas?state=%00",
    "/sagas?state=running&state=failed",
    "/sagas?limit=x",
    "/sagas?limit=0",
    "/sagas?limit=-1",
    "/sagas?limit=1001",
    "/sagas?limit=1e3",
    "/sagas?limit=%20%2050",
    "/sagas?limit=%C2%B2",  # a superscript two: str.isdigit() says yes, int() says no
    "/sagas?limit=%D9%A5",  # an Arabic-Indic five
    "/sagas?limit=" + "9" * 5000,  # more digits than int() takes
    "/sagas?limit=%FF",
    "/sagas?limit=10&limit=20",
    "/sagas?colour=red",
    "/sagas?" + "x" * 5000,
    "/sagas?%FF=1",
    "/sagas/" + "x" * 201,
    "/sagas/a%00b",
    "/sagas/a%1Bb",
    "/sagas/%7F",
    "/sagas/%C2%85",  # a C1 control character
    "/sagas/{saga}?verbose=1",
]


@pytest.mark.parametrize("path", BAD)
def test_a_bad_parameter_is_a_400_with_a_json_error(tracker: Tracker, written: Written, path: str) -> None:
    status, body = tracker.get(path.format(saga=written.saga))
    assert status == 400 and isinstance(body, dict) and body["error"], (path[:80], status, body)
    assert len(body["error"]) < 300


@pytest.mark.parametrize("path", ["/sagas/no-such-saga", "/sagas/%FF", "/sagas/" + "x" * 200, "/sagas/%E2%80%AE"])
def test_an_id_no_saga_has_is_a_404_with_a_json_error(tracker: Tracker, path: str) -> None:
    status, body = tracker.get(path)
    assert status == 404 and isinstance(body, dict) and body["error"], (path[:80], status, body)


def test_trace_shows_the_saga_and_says_how_many_records_it_skipped(tracker: Tracker, written: Written) -> None:
    traced = pokesaga(tracker.settings, "trace", written.saga)
    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith(f"saga {written.saga}: failed in ")
    assert [line.split()[1] for line in lines[4:]] == [e.type for e in written.events]
    assert traced.stderr.strip().startswith(f"pokesaga trace: skipped {written.keyed} records keyed '{written.saga}'")
    assert len(traced.stderr.strip().splitlines()) == 1
    as_json = pokesaga(tracker.settings, "trace", written.saga, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [e["id"] for e in json.loads(as_json.stdout)["events"]] == [e.id for e in written.events]


async def test_the_rebuild_reads_past_what_it_cannot_parse(tracker: Tracker, written: Written) -> None:
    loaded = await history.load(tracker.settings.bootstrap, [PARTICIPANTS["status"]], CAPTURE.topics, CAPTURE.types)
    start, failed, _ = written.events
    found = {cause: [e.id for e in events] for cause, events in loaded["status"].items()}
    assert found == {history_key(start.sagaid, start.id): [failed.id]}


def test_dlq_list_shows_every_dead_letter_whatever_its_headers(tracker: Tracker) -> None:
    bootstrap, dlq = tracker.settings.bootstrap, topics.dead_letters(topics.STATUS)
    nulls = [("pokesaga.dlq.reason", None), ("pokesaga.dlq.topic", None), ("other", None)]
    asyncio.run(hostile.produce(bootstrap, dlq, [(b"k1", b"v1"), (None, b"")], headers=nulls))
    terminal = [("pokesaga.dlq.reason", b"\x1b]0;owned\x07\x1b[2J" + b"r" * 5000), ("pokesaga.dlq.topic", b"elsewhere")]
    asyncio.run(hostile.produce(bootstrap, dlq, [(b"\xff\xfe", b"\x00")], headers=terminal))
    asyncio.run(hostile.produce(bootstrap, dlq, [(b"k4", hostile.nested(5000))]))
    hostile.produce_unreadable(bootstrap, dlq, "k5", "unreadable")

    listed = pokesaga(tracker.settings, "dlq", "list", topics.STATUS)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[-1] == f"5 dead letters in {dlq}"
    assert sum("(no reason recorded)" in line for line in lines) == 4
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout and max(map(len, lines)) < 1100
    as_json = pokesaga(tracker.settings, "dlq", "list", dlq, "--json")
    assert as_json.returncode == 0, as_json.stderr
    letters = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(letters) == 5 and {letter["source"] for letter in letters} == {topics.STATUS}
    dry = pokesaga(tracker.settings, "dlq", "replay", topics.STATUS, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.splitlines()[-1] == f"would re-publish 5 dead letters from {dlq}"
    assert all(f"to {topics.STATUS}" in line for line in dry.stdout.splitlines()[:-1])  # never to a header's topic


def test_a_restarted_tracker_serves_timelines_an_older_tracker_stored(tracker: Tracker, written: Written) -> None:
    """The changelog holds what an older tracker stored: a time that is a number, fields of any type."""
    older = {
        "saga_id": "older", "trainer": "Ash", "pokemon": "Mew", "started_at": 12345, "ended_at": None,
        "outcome": None,
        "events": [
            {"id": "e1", "type": "PokemonEncountered", "service": "cli", "topic": topics.STATUS, "time": 12345,
             "causation": None, "seen_at": 1.0},
            {"id": "e2", "type": "PokemonParalyzed", "service": "status", "topic": topics.COMBAT,
             "time": "2026-11-23T10:00:00Z", "causation": "e1", "seen_at": 2.0, "undone": "all"},
        ],
    }  # fmt: skip
    odd = {"saga_id": ["odd"], "events": [{"id": 1}, {"id": "x", "type": "PokemonHealed", "time": [1]}]}
    changelog = [(b'"older"', older), (b'"odd"', odd), (b'"list"', [1, 2]), (b'"number"', 12345), (b'"none"', None)]
    tracker.stop()
    asyncio.run(
        hostile.produce(
            tracker.settings.bootstrap,
            "pokesaga-tracker-sagas-changelog",
            [(key, json.dumps(value).encode()) for key, value in changelog],
        )
    )
    tracker.start()

    async def listed() -> bool:
        status, body = tracker.get("/sagas?limit=1000")
        return status == 200 and {s["saga_id"] for s in body["sagas"]} == {written.saga, "older", "odd"}

    asyncio.run(eventually(listed, timeout=120, what="the restarted tracker to list the stored sagas"))
    status, body = tracker.get("/sagas")
    assert [s["saga_id"] for s in body["sagas"]][0] == written.saga  # with a start time, before those without
    status, view = tracker.get("/sagas/older")
    assert (
        status == 200
        and view["started_at"] is None
        and [e["time"] for e in view["events"]]
        == [
            None,
            "2026-11-23T10:00:00Z",
        ]
    )
    assert view["state"] == "stuck" and view["waiting_on"] == "combat" and "undone" not in view["events"][1]
    status, view = tracker.get("/sagas/odd")
    assert status == 200 and [(e["id"], e["time"]) for e in view["events"]] == [("x", None)]
    for path in ("/sagas/list", "/sagas/number", "/sagas/none"):
        assert tracker.get(path)[0] == 404, path
    assert tracker.get(f"/sagas/{written.saga}")[1]["state"] == "failed"
    assert tracker.get("/metrics")[0] == 200 and tracker.get("/")[0] == 200


def raw_request(port: int, method: str, target: str) -> int:
    """The status of one HTTP/1.1 request, sent as written (no client tidies it up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND")
TARGETS = ("/", "/sagas", "/sagas/x", "/metrics", "/sagas/%ff", "/sagas/a%2Fb", "/sagas?%", "/sagas?limit=%zz",
           "/sagas/%", "//sagas", "/table/sagas/", "/router/", "/nowhere")  # fmt: skip


def test_no_request_is_a_server_error(tracker: Tracker) -> None:
    answered = {(method, target): raw_request(tracker.port, method, target) for method in METHODS for target in TARGETS}
    assert not {request: status for request, status in answered.items() if status >= 500}
    assert answered[("GET", "/table/sagas/")] == 404  # faust's own view of the raw table is not served


MARKUP = "<img src=x onerror=\"document.title='owned'\">"  # what a page that inserts markup would run


async def test_the_page_shows_markup_in_an_event_as_text(tracker: Tracker, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("chromium and chromedriver not found: `make browser` installs Debian's chromium, chromium-driver")
    saga = f"<b>bold</b>-{uuid.uuid4().hex[:6]}"
    await publish(tracker.settings.bootstrap, [start_event(saga, {"name": MARKUP}, {"name": "Pidgey"})])

    async def listed() -> bool:
        return tracker.get("/sagas/" + urllib.parse.quote(saga, safe=""))[0] == 200

    await eventually(listed, timeout=60, what="the tracker to show the saga")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        browser.get(f"http://127.0.0.1:{tracker.port}/?state=%3Cb%3E")  # a state no saga has: every saga

        def rows(b: webdriver.Chrome) -> list[Any]:
            return [r for r in b.find_elements(By.CSS_SELECTOR, "tr.saga") if r.get_attribute("data-saga") == saga]

        WebDriverWait(browser, 30).until(rows)
        cells = [td.text for td in rows(browser)[0].find_elements(By.TAG_NAME, "td")]
        rows(browser)[0].click()
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#timeline tbody tr"))
        title = browser.find_element(By.ID, "timeline-title").text
        injected = browser.find_elements(By.CSS_SELECTOR, "img, b")
        page_title = browser.title
    finally:
        browser.quit()
    assert cells[:4] == [saga, MARKUP, "Pidgey", "running"]
    assert title == f"{saga}: running (waiting on status)"
    assert not injected and page_title == "pokesaga — sagas"
