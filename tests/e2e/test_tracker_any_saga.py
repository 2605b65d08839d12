"""The tracker takes the saga it is handed: run on the transfer example (``python -m examples.transfer run
tracker``, no Pokémon anywhere), it draws that saga's choreography and
counts its outcomes under the states its declaration gives them (succeeded, failed).

The module runs on a broker of its own, so what the tracker counts is exactly what it started.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.local.broker import free_port
from engine.observe import flow
from examples.transfer.saga import TRANSFER
from examples.transfer.settings import SERVICES, Settings
from tests.conftest import new_broker
from tests.e2e.test_console import keep, shown
from tests.e2e.test_example_transfer import OPENING, Bank, database_urls
from tests.e2e.test_tracker import chromium
from tests.support import eventually, http_get, metric_samples, total

pytestmark = pytest.mark.no_database  # the tracker reads topics only: once, on the SQLite pass


class Tracker:
    """``python -m examples.transfer run tracker`` (the engine's verb, for the saga it is handed), in a
    process of its own."""

    def __init__(self, bank: Bank, port: int) -> None:
        log = bank.settings.data_dir / "logs" / "tracker.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.port = port
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.transfer", "run", "tracker"],
                env=bank.env(POKESAGA_TRACKER_PORT=str(port), POKESAGA_STUCK_AFTER="600"),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def get(self, path: str) -> tuple[int, Any]:
        assert self.process.poll() is None, f"the tracker left ({self.process.returncode}); its log: {self.log}"
        return http_get(self.port, path)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bank, Tracker]]:
    """The transfer's two services and its tracker, on a broker of their own."""
    data = tmp_path_factory.mktemp("tracker-transfer")
    with new_broker(data / "broker") as bootstrap:
        settings = Settings(kafka_bootstrap_servers=bootstrap, data_dir=data / "data", **database_urls("tracked"))
        bank = Bank(settings)
        tracker: Tracker | None = None
        try:
            for service in SERVICES:
                bank.start(service)
            bank.joined()
            tracker = Tracker(bank, free_port())

            async def answers() -> bool:
                return tracker is not None and tracker.get("/overview")[0] == 200

            asyncio.run(eventually(answers, timeout=90, what="the tracker to serve its overview"))
            yield bank, tracker
        finally:
            code = tracker.stop() if tracker is not None else None
            codes = {service: bank.stop(service) for service in list(bank.processes)}
        assert code == 0, f"the tracker did not stop cleanly: {code} (log: {data / 'data' / 'logs' / 'tracker.log'})"
        assert set(codes.values()) == {0}, f"services did not stop cleanly: {codes}"


def test_the_tracker_shows_the_saga_it_is_handed(tracked: tuple[Bank, Tracker]) -> None:
    bank, tracker = tracked
    tag = uuid.uuid4().hex[:6]
    expected = {}
    for n in range(2):
        (saga_id,) = bank.transfer(f"alice{n}-{tag}", f"bob{n}-{tag}", 10_00)
        expected[saga_id] = "succeeded"
    (refunded,) = bank.transfer(f"carol-{tag}", f"closed-{tag}", 20_00)  # the deposit fails, refunded
    (short,) = bank.transfer(f"dave-{tag}", f"erin-{tag}", OPENING + 1)  # the withdrawal fails
    expected |= {refunded: "failed", short: "failed"}

    async def counted() -> bool:
        status, body = tracker.get("/overview")
        return status == 200 and body["states"].get("succeeded") == 2 and body["states"].get("failed") == 2

    asyncio.run(eventually(counted, timeout=90, what="the tracker to count 2 sagas succeeded, 2 failed"))
    status, overview = tracker.get("/overview")
    assert status == 200
    graph = flow.graph(TRANSFER)
    assert overview["saga"] == "transfer"
    assert overview["nodes"] == graph["nodes"]
    assert [n["id"] for n in overview["nodes"]] == ["client", *TRANSFER.participants, "outcomes"]
    assert {"withdrawals", "deposits"} <= set(overview["participants"])
    assert set(overview["participants"]) == set(TRANSFER.participants)
    edges = {e["event"]: (e["from"], e["to"], e["kind"]) for e in overview["edges"]}
    assert edges["TransferRequested"] == ("client", "withdrawals", "start")
    assert edges["MoneyWithdrawn"] == ("withdrawals", "deposits", "success")
    assert edges["MoneyDeposited"] == ("deposits", "outcomes", "outcome")
    assert edges["DepositFailed"][:2] == ("deposits", "withdrawals.compensations")
    assert edges["TransferFailed"][2] == "outcome"
    assert set(edges) == {e["event"] for e in graph["edges"]}
    states = overview["states"]
    assert states == {
        "running": 0, "retrying": 0, "compensating": 0, "stuck": 0, "refused": 0, "needs_operator": 0,
        "succeeded": 2, "failed": 2,
    }  # fmt: skip
    assert overview["tiles"]["outcomes"] == {"succeeded": 2, "failed": 2}
    reasons = {(f["reason"], f["step"]): f["sagas"] for f in overview["failures"]}
    assert reasons == {("account_closed", "deposits"): 1, ("insufficient_funds", "withdrawals"): 1}

    for saga_id, state in expected.items():
        status, view = tracker.get(f"/sagas/{saga_id}")
        assert (status, view["state"]) == (200, state), view
        assert view["events"][0]["type"] == "TransferRequested"
        assert view["commands"] == []  # the engine knows no saga's command line; the transfer's display says none
    status, listed = tracker.get("/sagas?state=failed")
    assert status == 200 and {s["saga_id"] for s in listed["sagas"]} == {refunded, short}
    assert tracker.get("/sagas?trainer=x")[0] == 400  # no field but the saga's own: capture's are unknown here

    samples = metric_samples(tracker.port)
    assert total([samples], "pokesaga_tracker_sagas_started_total") == 4
    assert total([samples], "pokesaga_tracker_sagas_completed_total", outcome="MoneyDeposited") == 2
    assert total([samples], "pokesaga_tracker_sagas_completed_total", outcome="TransferFailed") == 2

    status, page = tracker.get("/")
    assert status == 200
    assert '"saga": "transfer"' in page and '"succeeded": ["succeeded"]' in page and "/*CHAIN*/null" not in page


def test_the_console_draws_the_saga_it_is_handed(tracked: tuple[Bank, Tracker], tmp_path: Path) -> None:
    """In the real headless Chromium: the transfer's graph, its outcomes on the tiles under their
    own states, its list with no column of another saga, a failed transfer's page."""
    from selenium.webdriver.common.by import By

    bank, tracker = tracked
    tag = uuid.uuid4().hex[:6]
    (moved,) = bank.transfer(f"fay-{tag}", f"gus-{tag}", 5_00)
    (refused,) = bank.transfer(f"fay-{tag}", f"closed-{tag}", 5_00)

    async def ended() -> bool:
        views = [tracker.get(f"/sagas/{saga_id}") for saga_id in (moved, refused)]
        return [(status, view.get("state")) for status, view in views] == [(200, "succeeded"), (200, "failed")]

    asyncio.run(eventually(ended, timeout=90, what="both transfers to end"))
    states = tracker.get("/overview")[1]["states"]
    with chromium(tmp_path) as browser:
        browser.get(f"http://127.0.0.1:{tracker.port}/")

        def tiles(b: Any) -> tuple[bool, Any]:
            seen = {k: b.find_element(By.ID, f"tile-{k}").text for k in ("succeeded", "failed")}
            return seen == {"succeeded": str(states["succeeded"]), "failed": str(states["failed"])}, seen

        shown(browser, tiles, "the outcomes on the tiles, under the transfer's states")
        drawn = [n.get_attribute("data-node") for n in browser.find_elements(By.CSS_SELECTOR, ".node[data-node]")]
        assert drawn == ["client", *TRANSFER.participants, "outcomes"]
        keep(browser, "tracker-transfer-overview.png")

        browser.get(f"http://127.0.0.1:{tracker.port}/#/sagas")

        def listed(b: Any) -> tuple[bool, Any]:
            heads = [th.text for th in b.find_elements(By.CSS_SELECTOR, "#sagas thead th")]
            rows = {
                r.get_attribute("data-saga"): r.find_elements(By.TAG_NAME, "td")[1].text
                for r in b.find_elements(By.CSS_SELECTOR, "tr.saga")
            }
            return {moved: "succeeded", refused: "failed"}.items() <= rows.items(), (heads, rows)

        heads, _ = shown(browser, listed, "the two transfers listed with their states")
        assert [h.lower() for h in heads] == ["saga", "state", "waiting on", "reason", "started (utc)", "duration"]

        browser.get(f"http://127.0.0.1:{tracker.port}/#/saga/{urllib.parse.quote(refused, safe='')}")

        def page(b: Any) -> tuple[bool, Any]:
            state = b.find_element(By.ID, "saga-state")
            return (state.text, state.get_attribute("class")) == ("failed", "state failed bad"), state.text

        shown(browser, page, "the refused transfer's page")
        keep(browser, "tracker-transfer-saga.png")
