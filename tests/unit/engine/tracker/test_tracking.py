"""The tracker's view of a saga, built from the declaration it is handed (the toy saga here): the
states its outcomes end in by default, what a ``Display`` changes, the page's legend, a trace."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from engine.observe import flow
from engine.tracker import trace
from engine.tracker.app import page_for
from engine.tracker.tracking import Display, Tracking, default_labels
from tests.toy.kit import asked
from tests.toy.saga import TOY


def test_by_default_a_failure_outcome_ends_failed_and_the_other_succeeded() -> None:
    assert default_labels(TOY) == {"SecondDone": "succeeded", "ToyFailed": "failed"}
    tracking = Tracking(TOY)
    assert tracking.timelines.states[-2:] == ("succeeded", "failed")
    assert (tracking.fields, tracking.app_id, tracking.internal_topics) == (
        (),
        "toy-tracker",
        ("toy-tracker-sagas-changelog",),
    )
    assert tracking.graph == flow.graph(TOY)
    assert set(tracking.topics) == {*TOY.topics, TOY.retries_topic, *(f"{t}.dlq" for t in TOY.consumed)}
    assert tracking.chain["succeeded"] == ["succeeded"] and tracking.chain["failed"] == ["failed"]
    assert tracking.commands({"saga_id": "s", "state": "failed"}, set()) == []  # no command line known


def test_a_display_names_the_states_and_the_fields_shown() -> None:
    display = Display(labels={"SecondDone": "done", "ToyFailed": "undone"}, fields=("name",), titles={"name": "who"})
    tracking = Tracking(TOY, display)
    assert tracking.timelines.states[-2:] == ("done", "undone")
    assert tracking.chain["fields"] == [["name", "who"]]
    assert (tracking.chain["succeeded"], tracking.chain["failed"]) == (["done"], ["undone"])
    timeline = tracking.timelines
    found = timeline.new("s-1")
    timeline.add(found, timeline.parse(asked("s-1", "Ann").to_json(), "toy.first", ()), 1.0)
    view = timeline.view(found, 2.0, 600)
    assert (view["name"], view["state"]) == ("Ann", "running")
    rendered = trace.render(TOY, view, display)
    assert rendered.splitlines()[1] == "who Ann"
    assert trace.render(TOY, view).splitlines()[1] == ""  # no field shown: no summary line


def test_labels_must_name_every_outcome() -> None:
    with pytest.raises(ValueError, match="every outcome"):
        Tracking(TOY, Display(labels={"SecondDone": "done"}))


def test_the_page_carries_the_saga_legend_as_script_safe_json() -> None:
    tracking = Tracking(TOY, Display(fields=("name",), titles={"name": "</script><b>"}))
    html = page_for(tracking)
    assert "/*CHAIN*/" not in html and "</script><b>" not in html
    found = re.search(r"const CHAIN = (.*);\n", html)
    assert found is not None
    chain: dict[str, Any] = json.loads(found.group(1))
    assert chain == json.loads(json.dumps(tracking.chain))
