"""The console (the tracker's page) in the real headless Chromium: the overview's live figures on
the right participants while a service is stopped and after it returns, the saga list's search
and filters, one failed saga's page (its bars in causal order with the compensations apart, its
events' JSON, the commands to copy). Screenshots of the three views are kept in ``artifacts/``.

The module runs on a broker and a cluster of its own, so what the tracker counts is exactly what
its tests started; each test's sagas carry a run id of their own.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capture.saga import CAPTURE
from capture.starter import publish, start_event
from engine.local.broker import free_port
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, HARD, breaking_free, cluster
from tests.e2e.test_tracker import ARTIFACTS, Tracked, chromium, linear
from tests.support import eventually

pytestmark = pytest.mark.no_database  # the tracker reads topics only: once, on the SQLite pass

FIGURES = ("waiting", "retrying", "stuck", "lag", "members")
PARTICIPANTS = tuple(CAPTURE.participants)  # the steps, then the compensators


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    data = tmp_path_factory.mktemp("console")
    with (
        new_broker(data / "broker") as bootstrap,
        cluster(
            bootstrap,
            data,
            POKESAGA_PARTY_SIZE="1",
            POKESAGA_PC_CAPACITY="0",  # a trainer's second capture fails
        ) as running,
    ):
        tracker = Tracked(running, free_port())
        tracker.start()

        async def answers() -> bool:
            return tracker.get("/overview")[0] == 200

        asyncio.run(eventually(answers, timeout=60, what="the tracker to serve its overview"))
        yield tracker


def shown(browser: Any, check: Callable[[Any], tuple[bool, Any]], what: str, timeout: float = 60) -> Any:
    """What ``check`` sees on the page once it says it is right (polled until ``timeout``: the
    page refreshes itself); an AssertionError with what it saw last otherwise."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.wait import WebDriverWait

    seen: list[Any] = [None]

    def probe(b: Any) -> Any:
        try:
            right, seen[0] = check(b)
        except (NoSuchElementException, StaleElementReferenceException) as gone:  # redrawn meanwhile
            seen[0] = repr(gone).splitlines()[0]
            return False
        return seen[0] if right else False

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.2).until(probe)
    except TimeoutException:
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}; the page showed {seen[0]!r}"
        ) from None


def node(browser: Any, name: str) -> dict[str, Any]:
    """What the overview's graph shows on a participant's node."""
    from selenium.webdriver.common.by import By

    found = browser.find_element(By.CSS_SELECTOR, f'.node[data-node="{name}"]')
    figures: dict[str, Any] = {k: found.find_element(By.CSS_SELECTOR, f".{k}").text for k in FIGURES}
    for k, text in figures.items():
        figures[k] = int(text) if text.isdigit() else text
    badge = found.find_element(By.CSS_SELECTOR, ".down-badge")
    return figures | {"down": "down" in (found.get_attribute("class") or "").split(), "badge": badge.is_displayed()}


def keep(browser: Any, name: str) -> Path:
    """A screenshot of the whole page (the window as tall as the page) in ``artifacts/``."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, max(900, min(int(height) + 100, 2400)))
    browser.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / name))
    browser.set_window_size(1400, 900)
    return ARTIFACTS / name


def listed(browser: Any) -> dict[str, str]:
    """The sagas the list shows: id → state (its 4th cell)."""
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "tr.saga")
    return {r.get_attribute("data-saga"): r.find_elements(By.TAG_NAME, "td")[3].text for r in rows}


async def test_the_overview_shows_a_stopped_services_waiting_sagas_and_lag_on_its_node_and_marks_it_down(
    tracked: Tracked, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    run = uuid.uuid4().hex[:6]
    count = 4
    sagas = [
        start_event(f"wait-{run}-{i}", {"name": f"Ida-{run}-{i}"}, {"name": "Pidgey", **CERTAIN}) for i in range(count)
    ]
    bootstrap = tracked.running.settings.bootstrap
    with chromium(tmp_path) as browser:
        browser.get(f"http://127.0.0.1:{tracked.port}/")
        shown(browser, lambda b: ((n := node(b, "combat"))["waiting"] == 0 and not n["down"], n), "combat up and idle")
        tracked.running.stop("combat")
        try:
            await publish(bootstrap, sagas)

            def combat_down(b: Any) -> tuple[bool, Any]:
                n = node(b, "combat")
                lag = n["lag"] if isinstance(n["lag"], int) else -1
                return n["waiting"] == count and lag >= count and n["members"] == 0 and n["down"] and n["badge"], n

            combat = shown(browser, combat_down, f"combat's node: {count} waiting, lag ≥ {count}, down")
            others = {name: node(browser, name)["waiting"] for name in PARTICIPANTS if name != "combat"}
            up = {name: node(browser, name)["down"] for name in ("status", "pokeball", "delivery")}
            alert = browser.find_element(By.ID, "alert-down").text
            screenshot = keep(browser, "console-overview.png")
        finally:
            tracked.running.start("combat")
        assert combat["stuck"] <= count and combat["retrying"] == 0
        assert others == dict.fromkeys(others, 0), others
        assert up == dict.fromkeys(up, False) and "combat" in alert

        def combat_back(b: Any) -> tuple[bool, Any]:
            # The service runs two groups (combat and combat.compensations): they rejoin one after
            # the other, and the alert names every group still without a member.
            n = node(b, "combat")
            alerts = [a.text for a in b.find_elements(By.ID, "alert-down")]
            return n["waiting"] == 0 and not n["down"] and not n["badge"] and n["members"] == 1 and not alerts, (
                n,
                alerts,
            )

        shown(browser, combat_back, "combat's node back: nothing waiting, not down, no alert", timeout=90)
    for saga in sagas:
        await tracked.saga(saga.sagaid, state="delivered")  # each its own trainer: every party had room
    print(f"\nscreenshot: {screenshot}")


async def test_the_list_finds_sagas_by_trainer_saga_id_reason_and_state_with_counts_per_state(
    tracked: Tracked, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run = uuid.uuid4().hex[:6]
    caught, immune, free = f"c{run}-caught", f"c{run}-immune", breaking_free(f"c{run}-free", HARD)
    await publish(
        tracked.running.settings.bootstrap,
        [
            start_event(caught, {"name": f"Jo-{run}"}, {"name": "Caterpie", **CERTAIN}),
            start_event(immune, {"name": f"Kim-{run}"}, {"name": "Pikachu"}),  # electric: cannot be paralyzed
            start_event(free, {"name": f"Kim-{run}"}, HARD),
        ],
    )
    await tracked.saga(caught, state="delivered", timeout=90)
    reason = (await tracked.saga(immune, state="failed", timeout=90))["events"][-1]["reason"]
    await tracked.saga(free, state="failed", timeout=90)

    with chromium(tmp_path) as browser:
        browser.get(f"http://127.0.0.1:{tracked.port}/#/sagas")
        search = browser.find_element(By.ID, "search")

        def search_for(text: str) -> None:
            search.clear()
            search.send_keys(text, Keys.ENTER)

        def only(expected: dict[str, str], what: str) -> None:
            shown(browser, lambda b: ((found := listed(b)) == expected, found), what, timeout=30)

        search_for(f"kim-{run}")  # a trainer, any case
        only({immune: "failed", free: "failed"}, "Kim's sagas")
        assert browser.switch_to.active_element == search  # the page refreshed, the search box kept focus
        search_for(f"c{run}-i")  # a saga id prefix
        only({immune: "failed"}, "the saga whose id starts so")
        search_for(reason[:8])  # a reason's prefix
        only({immune: "failed"}, f"the saga that failed for {reason}")

        search_for(f"c{run}")  # this test's sagas: counts per state, then a state chosen
        only({caught: "delivered", immune: "failed", free: "failed"}, "this test's sagas")

        def counts(b: Any) -> tuple[bool, Any]:
            chips = b.find_elements(By.CSS_SELECTOR, "#state-counts .chip")
            found = {c.get_attribute("data-state"): c.find_element(By.CSS_SELECTOR, ".count").text for c in chips}
            expected = {"all": "3", "running": "0", "retrying": "0", "compensating": "0", "stuck": "0"}
            expected |= {"refused": "0", "needs_operator": "0", "delivered": "1", "failed": "2"}
            return found == expected, found

        shown(browser, counts, "the counts per state of this test's sagas")
        browser.find_element(By.LINK_TEXT, "failed").click()
        only({immune: "failed", free: "failed"}, "this test's failed sagas")
        fragment = urllib.parse.urlsplit(browser.current_url).fragment
        assert fragment.startswith("/sagas?"), fragment  # the view, linkable
        assert urllib.parse.parse_qs(fragment.removeprefix("/sagas?")) == {"state": ["failed"], "q": [f"c{run}"]}

        since = browser.find_element(By.ID, "since")
        since.send_keys("2000-01-01 00:00", Keys.ENTER)  # a time range: since 2000, until …
        until = browser.find_element(By.ID, "until")
        until.send_keys("2001-01-01", Keys.ENTER)  # … 2001: none

        def none(b: Any) -> tuple[bool, Any]:
            found, said = listed(b), b.find_element(By.ID, "list-count").text
            return not found and said == "No saga matches.", (found, said)

        shown(browser, none, "no saga started in 2000")
        until.clear()
        until.send_keys(Keys.ENTER)
        only({immune: "failed", free: "failed"}, "this test's failed sagas again, since 2000")
        screenshot = keep(browser, "console-list.png")

        # A link to the list with its filters, as another engineer opens it: the saga id prefix.
        browser.get(f"http://127.0.0.1:{tracked.port}/#/sagas?saga={urllib.parse.quote(free)}")
        only({free: "failed"}, "the saga linked by its id")
        browser.find_element(By.CSS_SELECTOR, f'tr.saga[data-saga="{free}"]').click()
        title = shown(browser, lambda b: ((t := b.find_element(By.ID, "timeline-title").text) != "", t), "its page")
    assert title == f"{free}: failed"
    print(f"\nscreenshot: {screenshot}")


async def test_a_failed_sagas_page_shows_its_bars_in_causal_order_compensations_apart_its_json_and_commands(
    tracked: Tracked, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    run = uuid.uuid4().hex[:6]
    trainer = {"name": f"Max-{run}"}
    first, saga = f"first-{run}", f"full-{run}"  # the first fills the party: the second fails at delivery
    bootstrap = tracked.running.settings.bootstrap
    await publish(bootstrap, [start_event(first, trainer, {"name": "Caterpie", **CERTAIN})])
    await tracked.saga(first, state="delivered", timeout=90)
    await publish(bootstrap, [start_event(saga, trainer, {"name": "Caterpie", **CERTAIN})])
    view = await tracked.saga(saga, state="failed", timeout=90)
    assert linear(view["events"]) and len(view["events"]) == 8
    failure = next(e for e in view["events"] if e["type"] == "DeliveryFailed")

    with chromium(tmp_path) as browser:
        browser.get(f"http://127.0.0.1:{tracked.port}/#/saga/{urllib.parse.quote(saga, safe='')}")

        def events(b: Any) -> tuple[bool, Any]:
            rows = b.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
            found = [(r.get_attribute("class"), r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]
            return len(found) == 8 and len(b.find_elements(By.CSS_SELECTOR, "details.event-json pre")) == 8, found

        rows = shown(browser, events, "the saga's events and their records")
        title = browser.find_element(By.ID, "timeline-title").text

        def bar(element: Any) -> tuple[str, str, bool]:
            failed = "failed" in (element.get_attribute("class") or "").split()
            return element.get_attribute("data-participant"), element.get_attribute("data-kind"), failed

        steps = browser.find_elements(By.CSS_SELECTOR, "#bars .group.steps .bar")
        compensations = browser.find_elements(By.CSS_SELECTOR, "#bars .group.compensations .bar")
        group, above = (
            browser.find_element(By.CSS_SELECTOR, f"#bars .group.{g}").rect for g in ("compensations", "steps")
        )
        below = group["y"] >= above["y"] + above["height"] - 1  # drawn apart, under the steps
        label = browser.find_element(By.CSS_SELECTOR, "#bars .group.compensations .group-label").text
        starts = [b.location["x"] for b in steps + compensations]  # each bar starts where the one before ended
        drawn = [bar(b) for b in steps], [bar(b) for b in compensations]

        folded = [d.get_attribute("open") for d in browser.find_elements(By.CSS_SELECTOR, "details.event-json")]
        unfolded = browser.find_element(By.CSS_SELECTOR, f'details.event-json[data-event="{failure["id"]}"]')
        unfolded.find_element(By.TAG_NAME, "summary").click()
        document = json.loads(unfolded.find_element(By.TAG_NAME, "pre").text)

        commands = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#commands code")]
        trace = commands[0]
        copy = browser.find_elements(By.CSS_SELECTOR, "#commands button.copy")[0]
        copy.click()
        copied = shown(
            browser,
            lambda b: (copy.text != "Copy", (copy.text, b.execute_script("return window.getSelection().toString()"))),
            "the command copied, or selected to copy",
        )
        screenshot = keep(browser, "console-failed-saga.png")

    assert title == f"{saga}: failed"
    assert rows == [
        ("step", "PokemonEncountered"), ("step", "PokemonParalyzed"), ("step", "PokemonWeakened"),
        ("step", "PokemonCaught"), ("failure", "DeliveryFailed"), ("compensation", "PokemonReleased"),
        ("compensation", "PokemonHealed"), ("outcome", "CaptureFailed"),
    ]  # fmt: skip
    assert drawn[0] == [
        ("status", "step", False), ("combat", "step", False), ("pokeball", "step", False), ("delivery", "step", True),
    ]  # fmt: skip
    assert drawn[1] == [
        ("pokeball.compensations", "compensation", False), ("combat.compensations", "compensation", False),
        ("status.compensations", "compensation", False),
    ]  # fmt: skip
    assert below and label == "COMPENSATIONS" and starts == sorted(starts), (below, label, starts)
    assert folded == [None] * 8  # every event's JSON collapsed until asked for
    assert document["id"] == failure["id"] and document["type"] == "DeliveryFailed" and document["sagaid"] == saga
    assert trace == f"pokesaga trace {shlex.quote(saga)}" and f"pokesaga inspect saga {shlex.quote(saga)}" in commands
    assert copied[0] == "Copied" or copied == ("Selected: Ctrl+C", trace), copied
    print(f"\nscreenshot: {screenshot}")
