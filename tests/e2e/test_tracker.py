"""The tracker: every saga's timeline, state and latency, from the topics alone.

The module runs on a broker of its own, so what the tracker counts is exactly what this
module started.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from capture.processes import ServiceProcess
from capture.saga import CAPTURE
from capture.starter import TopicWatcher, publish, start_event
from capture.tracking import APP_ID, DEAD_LETTER_TOPICS, instant
from contracts import topics
from engine.local.broker import free_port
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, HARD, Cluster, breaking_free, cluster, hand_written, pokesaga, produce_raw
from tests.support import Samples, caught_up, eventually, http_get, metric_samples

pytestmark = pytest.mark.no_database  # the tracker reads topics only: once, on the SQLite pass

ENV = {
    "POKESAGA_PARTY_SIZE": "1",
    "POKESAGA_PC_CAPACITY": "0",
    "POKESAGA_FAULTS": "0.2",  # transient errors on every participant, retried
    "POKESAGA_RETRY__INITIAL_INTERVAL": "0.002",
    "POKESAGA_RETRY__MAXIMUM_INTERVAL": "0.01",
    "POKESAGA_COMPENSATION_RETRY__INITIAL_INTERVAL": "0.002",
    "POKESAGA_COMPENSATION_RETRY__MAXIMUM_INTERVAL": "0.01",
}


class Tracked:
    def __init__(self, running: Cluster, port: int) -> None:
        self.running = running
        self.port = port

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.port, path)

    def start(self) -> ServiceProcess:
        return self.running.start("tracker", POKESAGA_TRACKER_PORT=str(self.port), POKESAGA_STUCK_AFTER="4")

    async def saga(self, saga_id: str, state: str | None = None, timeout: float = 60) -> dict[str, Any]:
        """The saga's view once it is in ``state`` with every event up to there: the topics are
        read independently, so an outcome may be seen before the compensation that led to it."""
        found: dict[str, Any] = {}

        async def seen() -> bool:
            status, body = self.get(f"/sagas/{saga_id}")
            found.update(body if status == 200 else {})
            return status == 200 and (state is None or body["state"] == state) and linear(body["events"])

        await eventually(seen, timeout=timeout, what=f"the tracker to show {saga_id} {state or ''}")
        return found

    def metrics(self) -> Samples:
        return metric_samples(self.port)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    data = tmp_path_factory.mktemp("tracker")
    with new_broker(data / "broker") as bootstrap, cluster(bootstrap, data, **ENV) as running:
        tracker = Tracked(running, free_port())
        tracker.start()
        yield tracker


def linear(events: list[dict[str, Any]]) -> bool:
    """Each event caused by the one before it: the saga's causal order."""
    return events[0]["causation"] is None and all(
        later["causation"] == earlier["id"] for earlier, later in zip(events, events[1:], strict=False)
    )


async def test_every_path_is_tracked_in_causal_order_with_its_state_and_counted(tracked: Tracked) -> None:
    run = uuid.uuid4().hex[:6]
    lucky, unlucky = f"Ann-{run}", f"Bob-{run}"
    sagas = [
        start_event(f"ok-{run}", {"name": lucky}, {"name": "Caterpie", **CERTAIN}),  # delivered, party full after
        start_event(f"full-{run}", {"name": lucky}, {"name": "Caterpie", **CERTAIN}),  # delivery fails
        start_event(f"zap-{run}", {"name": unlucky}, {"name": "Pikachu"}),  # cannot be paralyzed
        start_event(f"faint-{run}", {"name": unlucky}, {"name": "Rattata", "hp": 1}),
        start_event(breaking_free(f"free-{run}", HARD), {"name": unlucky}, HARD),
    ]
    async with TopicWatcher(tracked.running.settings.bootstrap, topics.OUTCOMES) as outcomes:
        await publish(tracked.running.settings.bootstrap, sagas[:1])
        await outcomes.wait_for([sagas[0].sagaid], timeout=60)  # the party is full before the second
        await publish(tracked.running.settings.bootstrap, sagas[1:])
        ended = await outcomes.wait_for([s.sagaid for s in sagas], timeout=90)

    expected = {"PokemonDelivered": "delivered", "CaptureFailed": "failed"}
    views = {}
    for saga in sagas:
        outcome = ended[saga.sagaid].type
        view = await tracked.saga(saga.sagaid, state=expected[outcome])
        views[saga.sagaid] = view
        events = view["events"]
        assert linear(events), [(e["type"], e["id"], e["causation"]) for e in events]
        assert events[0]["type"] == "PokemonEncountered" and events[-1]["type"] == outcome
        assert view["outcome"] == outcome and view["duration_ms"] > 0 and view["waiting_on"] is None
    types = {s: [e["type"] for e in v["events"]] for s, v in views.items()}
    assert types[f"full-{run}"][-4:] == ["DeliveryFailed", "PokemonReleased", "PokemonHealed", "CaptureFailed"]
    assert types[f"zap-{run}"] == ["PokemonEncountered", "ParalysisFailed", "CaptureFailed"]
    assert types[f"faint-{run}"] == ["PokemonEncountered", "PokemonParalyzed", "PokemonFainted", "CaptureFailed"]
    failed = views[f"full-{run}"]["events"][-1]
    assert failed["reason"] == "party_and_pc_full" and failed["undone"] == ["pokeball", "combat", "status"]

    # The listing, filtered by state, and the metrics, counting exactly what happened.
    status, listing = tracked.get("/sagas?state=failed&limit=50")
    assert status == 200 and {s["saga_id"] for s in listing["sagas"]} == {
        s for s, v in views.items() if v["state"] == "failed"
    }
    outcomes_seen = Counter(v["outcome"] for v in views.values())
    metrics = tracked.metrics()
    assert metrics[("pokesaga_tracker_sagas_started_total", ())] == len(sagas)
    for outcome, count in outcomes_seen.items():
        assert metrics[("pokesaga_tracker_sagas_completed_total", (("outcome", outcome),))] == count
    assert metrics[("pokesaga_tracker_saga_latency_seconds_count", ())] == len(sagas)

    # The same timelines from the terminal, read from the topics.
    traced = pokesaga(tracked.running.settings, "trace", f"full-{run}", "--json")
    assert traced.returncode == 0, traced.stderr
    assert [e["id"] for e in json.loads(traced.stdout)["events"]] == [e["id"] for e in views[f"full-{run}"]["events"]]
    table = pokesaga(tracked.running.settings, "trace", f"full-{run}").stdout
    assert table.splitlines()[0].startswith(f"saga full-{run}: failed in ")
    assert [line.split()[1] for line in table.splitlines()[4:]] == types[f"full-{run}"]

    # Killed and restarted, the tracker serves the same timelines (from its changelog): those it
    # serves once it has read every topic (a retry notice can be read after the saga's outcome).
    read = {APP_ID: [*CAPTURE.topics, CAPTURE.retries_topic, *DEAD_LETTER_TOPICS]}
    await eventually(lambda: caught_up(tracked.running.settings.bootstrap, read), timeout=60, what="the tracker")
    views = {saga_id: await tracked.saga(saga_id) for saga_id in views}
    tracked.running.kill("tracker")
    tracked.start()
    for saga_id, view in views.items():
        again = await tracked.saga(saga_id, timeout=120)
        assert {k: v for k, v in again.items() if k != "state"} == {k: v for k, v in view.items() if k != "state"}


async def test_a_saga_with_no_progress_is_stuck_and_says_what_it_waits_on(tracked: Tracked) -> None:
    saga = start_event(
        f"stuck-{uuid.uuid4().hex[:6]}", {"name": f"Cid-{uuid.uuid4().hex[:6]}"}, {"name": "Pidgey", **CERTAIN}
    )
    tracked.running.stop("combat")
    try:
        await publish(tracked.running.settings.bootstrap, [saga])
        view = await tracked.saga(saga.sagaid, state="stuck", timeout=60)
        assert view["waiting_on"] == "combat"
        status, listing = tracked.get("/sagas?state=stuck")
        assert status == 200 and saga.sagaid in {s["saga_id"] for s in listing["sagas"]}

        async def gauge() -> bool:
            return tracked.metrics().get(("pokesaga_tracker_sagas_stuck", ()), 0) >= 1

        await eventually(gauge, timeout=30, what="the stuck gauge")
    finally:
        tracked.running.start("combat")
    await tracked.saga(saga.sagaid, state="delivered", timeout=90)


def test_an_unknown_saga_is_a_404_and_a_malformed_query_a_400(tracked: Tracked) -> None:
    status, body = tracked.get("/sagas/no-such-saga")
    assert status == 404 and "no saga 'no-such-saga'" in body["error"]
    for query in ("state=bogus", "limit=x", "limit=0", "colour=red"):
        status, body = tracked.get(f"/sagas?{query}")
        assert status == 400 and body["error"], query
    missing = pokesaga(tracked.running.settings, "trace", "no-such-saga")
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "pokesaga trace: no event of saga 'no-such-saga' on the capture topics"
    )


ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless chromium, driven by selenium."""
    from selenium import webdriver

    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver_path):
        pytest.fail("chromium and chromedriver not found: `make browser` installs Debian's chromium, chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,900", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield browser
    finally:
        browser.quit()


async def test_the_page_in_a_real_browser_lists_the_sagas_and_opens_a_failed_ones_timeline(
    tracked: Tracked, tmp_path: Path
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    run = uuid.uuid4().hex[:6]
    saga, caught = breaking_free(f"page-{run}", HARD), f"caught-{run}"
    await publish(
        tracked.running.settings.bootstrap,
        [
            start_event(saga, {"name": f"Dee-{run}"}, HARD),
            start_event(caught, {"name": f"Eve-{run}"}, {"name": "Caterpie", **CERTAIN}),
        ],
    )
    await tracked.saga(saga, state="failed", timeout=90)
    await tracked.saga(caught, state="delivered", timeout=90)

    with chromium(tmp_path) as browser:
        browser.get(f"http://127.0.0.1:{tracked.port}/#/sagas")  # the list (the overview is at /)
        listed = f'tr.saga[data-saga="{saga}"]'
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, listed))
        assert browser.find_elements(By.CSS_SELECTOR, f'tr.saga[data-saga="{caught}"]')  # every state listed
        browser.find_element(By.LINK_TEXT, "failed").click()  # the state filter
        WebDriverWait(browser, 30).until(
            lambda b: (
                {r.find_elements(By.TAG_NAME, "td")[3].text for r in b.find_elements(By.CSS_SELECTOR, "tr.saga")}
                == {"failed"}
            )
        )
        browser.find_element(By.CSS_SELECTOR, listed).click()
        expected = [
            ("step", "PokemonEncountered"),
            ("step", "PokemonParalyzed"),
            ("step", "PokemonWeakened"),
            ("failure", "PokemonBrokeFree"),
            ("compensation", "PokemonHealed"),
            ("outcome", "CaptureFailed"),
        ]

        def timeline(b: Any) -> list[tuple[str, str]]:
            """The rows shown, once the page shows this saga's timeline (a timeline shown before it may
            still be there for a moment: another failed saga's, opened by an earlier test)."""
            if b.find_element(By.ID, "timeline-title").text != f"{saga}: failed":
                return []
            rows = b.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
            return [(row.get_attribute("class"), row.find_elements(By.TAG_NAME, "td")[1].text) for row in rows]

        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, 30).until(lambda b: timeline(b) == expected)
        shown = timeline(browser)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "tracker-failed-saga.png"))
    assert shown == expected
    print(f"\nscreenshot: {ARTIFACTS / 'tracker-failed-saga.png'}")


# Combat fails every attempt and retries without limit, a fraction of a second apart.
UNLIMITED = {"combat": {"maximum_attempts": 0, "initial_interval": 0.2, "maximum_interval": 0.5}}
RETRYING_ENV = {"POKESAGA_STEP_RETRY": json.dumps(UNLIMITED)}


async def test_a_saga_retrying_at_a_step_is_shown_retrying_attempt_n_of_m_until_the_fault_is_gone(
    tracked: Tracked, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    run = uuid.uuid4().hex[:6]
    saga = start_event(f"retry-{run}", {"name": f"Fay-{run}"}, {"name": "Caterpie", **CERTAIN})
    settings = tracked.running.settings
    tracked.running.stop("combat")
    tracked.running.start("combat", POKESAGA_FAULTS="combat=1.0", **RETRYING_ENV)
    try:
        await publish(settings.bootstrap, [saga])
        view = await tracked.saga(saga.sagaid, state="retrying", timeout=90)

        async def tried_again() -> bool:  # the notices of later attempts replace the first
            view.update(await tracked.saga(saga.sagaid))
            notice = view["retrying"] or {}  # status may retry first too (its faults are transient: 0.2)
            return view["state"] == "retrying" and notice.get("participant") == "combat" and notice["attempt"] >= 2

        await eventually(tried_again, timeout=60, what="combat's second attempt to be shown")
        notice = view["retrying"]
        assert view["waiting_on"] == "combat" and notice["participant"] == "combat"
        assert (notice["event_type"], notice["maximum_attempts"]) == ("PokemonParalyzed", 0)
        assert notice["error"].startswith("TransientFault: ") and notice["causation"] == view["events"][-1]["id"]
        assert abs(instant(notice["next_attempt_at"]) - time.time()) < 30
        assert [e["type"] for e in view["events"]] == ["PokemonEncountered", "PokemonParalyzed"]
        status, listing = tracked.get("/sagas?state=retrying")
        assert status == 200 and saga.sagaid in {s["saga_id"] for s in listing["sagas"]}

        async def gauge() -> bool:
            return tracked.metrics().get(("pokesaga_tracker_sagas_retrying", ()), 0) >= 1

        await eventually(gauge, timeout=30, what="the retrying gauge")

        # From the service's own database: the parked record, attempt n of m (the policy's m).
        shown = pokesaga(settings, "inspect", "saga", saga.sagaid, "--json", env=RETRYING_ENV)
        assert shown.returncode == 0, shown.stderr
        inspected = json.loads(shown.stdout)
        assert inspected["combat"] is None and inspected["status"] is not None  # combat has not attacked
        (parked,) = inspected["parked"]
        assert {k: parked[k] for k in ("service", "participant", "event_type", "reason", "maximum_attempts")} == {
            "service": "combat", "participant": "combat", "event_type": "PokemonParalyzed", "reason": "retrying",
            "maximum_attempts": 0,
        }  # fmt: skip
        assert parked["attempts"] >= 1 and parked["last_error"].startswith("TransientFault: ")
        assert instant(parked["next_attempt_at"]) > 0
        text = pokesaga(settings, "inspect", "saga", saga.sagaid, env=RETRYING_ENV).stdout.splitlines()
        assert text[-2] == "  parked:" and text[-1].startswith("    combat  PokemonParalyzed  retrying: attempt ")
        assert " of unlimited, next attempt at " in text[-1] and ", last error: TransientFault: " in text[-1]

        traced = pokesaga(settings, "trace", saga.sagaid)
        assert traced.returncode == 0 and traced.stdout.splitlines()[0].startswith(f"saga {saga.sagaid}: retrying")
        assert traced.stdout.splitlines()[-1].startswith("combat is retrying PokemonParalyzed: attempt ")

        with chromium(tmp_path) as browser:
            browser.get(f"http://127.0.0.1:{tracked.port}/?state=retrying")
            listed = f'tr.saga[data-saga="{saga.sagaid}"]'
            WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, listed))
            states = {
                r.find_elements(By.TAG_NAME, "td")[3].text for r in browser.find_elements(By.CSS_SELECTOR, "tr.saga")
            }
            browser.find_element(By.CSS_SELECTOR, listed).click()
            WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "retrying"))
            title = browser.find_element(By.ID, "timeline-title").text
            said = browser.find_element(By.ID, "retrying").text
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "tracker-retrying-saga.png"))
        assert states == {"retrying"} and title == f"{saga.sagaid}: retrying (waiting on combat)"
        assert (
            said.startswith("combat is retrying PokemonParalyzed: attempt ")
            and " of unlimited, next attempt at " in said
        )
    finally:
        tracked.running.stop("combat")
        tracked.running.start("combat", POKESAGA_FAULTS="")  # the fault gone

    done = await tracked.saga(saga.sagaid, state="delivered", timeout=90)
    assert done["retrying"] is None and done["retries"]["combat"]["attempt"] >= 2  # kept, superseded
    assert [e["type"] for e in done["events"]][1:3] == ["PokemonParalyzed", "PokemonWeakened"]
    shown = pokesaga(settings, "inspect", "saga", saga.sagaid, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["parked"] == []


async def test_a_saga_the_services_refused_has_a_page_with_its_dead_letters_and_the_commands_to_replay_them(
    tracked: Tracked,
) -> None:
    run = uuid.uuid4().hex[:6]
    refused, traced = f"refused-{run}", f"traced-{run}"
    bootstrap = tracked.running.settings.bootstrap
    await produce_raw(
        bootstrap, topics.STATUS, hand_written(refused, f"Gil-{run}", {"name": "Agumon"}), refused.encode()
    )
    trace = uuid.uuid4().hex
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        start = start_event(traced, {"name": f"Hal-{run}"}, {"name": "Caterpie", **CERTAIN})
        parent = f"00-{trace}-{uuid.uuid4().hex[:16]}-01".encode()
        await producer.send_and_wait(
            topics.STATUS, start.to_json(), key=traced.encode(), headers=[("traceparent", parent)]
        )
    finally:
        await producer.stop()

    async def dead_lettered() -> bool:
        status, body = tracked.get(f"/sagas/{refused}")
        return status == 200 and bool(body["dead_letters"])

    await eventually(dead_lettered, timeout=60, what="the refused saga's dead letter on its page")
    status, page = tracked.get(f"/sagas/{refused}")
    (letter,) = page["dead_letters"]
    assert page["events"] == [] and (letter["topic"], letter["source"]) == ("capture.status.dlq", "capture.status")
    assert "Agumon" in letter["reason"] and letter["consumer"] == "status"
    assert abs(instant(letter["time"]) - time.time()) < 3600  # when the service dead-lettered it (the broker's)
    commands = [c["command"] for c in page["commands"]]
    assert f"pokesaga dlq replay capture.status --saga {refused} --dry-run" in commands
    status, records = tracked.get(f"/sagas/{refused}/records")
    assert status == 200 and records["records"] == []
    (value,) = records["dead_letters"]
    assert value["found"] and value["value"]["sagaid"] == refused  # the record as the client wrote it
    listed = tracked.get(f"/sagas?saga={refused}")[1]
    assert listed["count"] == 0  # no event of it: on no list, but on its page
    errors = tracked.metrics()[("pokesaga_tracker_records_skipped_total", (("reason", "error"),))]
    assert errors == 0  # a dead letter is placed, not a bug of the tracker's

    view = await tracked.saga(traced, state="delivered", timeout=90)
    assert view["trace_id"] == trace  # the services passed the client's trace context on
    status, records = tracked.get(f"/sagas/{traced}/records")
    assert status == 200 and [r["id"] for r in records["records"]] == [e["id"] for e in view["events"]]
    assert all(
        r["found"] and r["value"]["id"] == r["id"] and r["value"]["sagaid"] == traced for r in records["records"]
    )
    assert [(b["participant"], b["kind"], b["failed"]) for b in view["bars"]] == [
        ("status", "step", False), ("combat", "step", False), ("pokeball", "step", False), ("delivery", "step", False),
    ]  # fmt: skip
    found = tracked.get(f"/sagas?trainer=hal-{run}")[1]
    assert [s["saga_id"] for s in found["sagas"]] == [traced] and found["counts"]["delivered"] == 1


def test_the_consoles_endpoints_refuse_a_bad_query_with_a_400_and_an_unknown_saga_with_a_404(tracked: Tracked) -> None:
    for path in ("/overview?x=1", "/sagas?since=yesterday", "/sagas?after=zz", "/sagas?q=" + "a" * 201,
                 "/sagas?until=2026-01-01T00:00:00Z&since=2026-02-01T00:00:00Z", "/sagas/x/records?y=1"):  # fmt: skip
        status, body = tracked.get(path)
        assert status == 400 and body["error"] and "\n" not in body["error"], path
    status, body = tracked.get("/sagas/no-such-saga/records")
    assert status == 404 and "no saga 'no-such-saga'" in body["error"]
    status, overview = tracked.get("/overview")
    assert status == 200 and [n["id"] for n in overview["nodes"]][:2] == ["client", "status"]
