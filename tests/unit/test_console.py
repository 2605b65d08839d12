"""What the console reads: the choreography's graph, a saga's bars, the index behind the list and
the overview (checked against the timelines themselves), the window's figures, the requests."""

from __future__ import annotations

import base64
import functools
import json
import math
import random
import shlex
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from capture import tracking as timeline
from capture.saga import CAPTURE
from capture.tracking import NotAnEvent
from contracts.events import EVENT_TYPES
from engine.observe import flow
from engine.tracker import api
from engine.tracker.broker import shown
from engine.tracker.figures import Latencies, Recent, percentile
from engine.tracker.index import Index, Search, decode_cursor, encode_cursor
from engine.wire.text import saga_argument, saga_option
from tests.hostile import encode, envelope

pytestmark = pytest.mark.no_database

T0 = 1_800_000_000.0
STUCK_AFTER = 60.0
BROKE_FREE = ["PokemonEncountered", "PokemonParalyzed", "PokemonWeakened", "PokemonBrokeFree", "PokemonHealed",
              "CaptureFailed"]  # fmt: skip
DELIVERED = ["PokemonEncountered", "PokemonParalyzed", "PokemonWeakened", "PokemonCaught", "PokemonDelivered"]
SOURCES = {"PokemonEncountered": "cli", "PokemonParalyzed": "status", "PokemonWeakened": "combat",
           "PokemonCaught": "pokeball", "PokemonDelivered": "delivery", "PokemonBrokeFree": "pokeball",
           "PokemonHealed": "combat.compensations", "CaptureFailed": "status.compensations",
           "ParalysisFailed": "status", "PokemonFainted": "combat"}  # fmt: skip


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def saga(saga_id: str, path: list[str], start: float, trainer: str = "Ash", pokemon: str = "Pidgey",
         reason: str = "broke_free", step: str = "pokeball", gap: float = 0.1) -> dict[str, Any]:  # fmt: skip
    """A timeline built as the tracker builds it, from the records of ``path``, one ``gap`` apart."""
    found = timeline.new(saga_id)
    cause = None
    for i, type_ in enumerate(path):
        entry: dict[str, Any] = {"id": f"{saga_id}/{i}", "type": type_, "saga_id": saga_id, "service": SOURCES[type_],
                                 "topic": EVENT_TYPES[type_].topic, "time": iso(start + i * gap), "causation": cause,
                                 "partition": 0, "offset": 100 + i}  # fmt: skip
        if type_ == "PokemonEncountered":
            entry |= {"trainer": trainer, "pokemon": pokemon}
        else:
            entry |= {"reason": reason, "failed_step": step, "undone": []}
        assert timeline.add(found, entry, start + i * gap)
        cause = entry["id"]
    return found


def test_the_graph_has_every_participant_and_an_edge_for_every_event_from_who_publishes_it() -> None:
    graph = flow.graph(CAPTURE)
    ids = [n["id"] for n in graph["nodes"]]
    assert ids == ["client", *CAPTURE.participants, "outcomes"]
    edges = {e["event"]: (e["from"], e["to"], e["kind"]) for e in graph["edges"]}
    assert set(edges) == set(CAPTURE.types)  # every event of the saga drawn once
    assert edges["PokemonEncountered"] == ("client", "status", "start")
    assert edges["PokemonWeakened"] == ("combat", "pokeball", "success")
    assert edges["DeliveryFailed"] == ("delivery", "pokeball.compensations", "failure")
    assert edges["PokemonReleased"] == ("pokeball.compensations", "combat.compensations", "compensation")
    assert edges["CaptureFailed"] == ("status.compensations", "outcomes", "outcome")
    assert all(e["from"] in ids and e["to"] in ids for e in graph["edges"])


def test_a_failed_sagas_bars_are_in_causal_order_with_the_compensations_after_the_failure() -> None:
    bars = timeline.bars(saga("s", BROKE_FREE, T0))
    assert [(b["participant"], b["kind"], b["failed"]) for b in bars] == [
        ("status", "step", False),
        ("combat", "step", False),
        ("pokeball", "step", True),  # it published PokemonBrokeFree
        ("combat.compensations", "compensation", False),
        ("status.compensations", "compensation", False),
    ]
    assert [b["consumed"] for b in bars] == BROKE_FREE[:-1] and [b["published"] for b in bars] == BROKE_FREE[1:]
    assert [b["start_ms"] for b in bars] == [0.0, 100.0, 200.0, 300.0, 400.0]
    assert all(b["duration_ms"] == 100.0 for b in bars)


def test_a_running_saga_has_an_open_bar_for_the_participant_it_waits_on() -> None:
    running = saga("r", DELIVERED[:2], T0)
    (done, waiting) = timeline.bars(running, now=T0 + 5)
    assert done["participant"] == "status" and done["published"] == "PokemonParalyzed"
    assert (waiting["participant"], waiting["published"], waiting["end"]) == ("combat", None, None)
    assert waiting["duration_ms"] == pytest.approx(4900.0)
    assert timeline.view(running, T0 + 5, STUCK_AFTER, restored=True)["bars"][-1]["participant"] == "combat"


def test_events_keep_where_they_are_on_the_broker_and_the_saga_its_trace_id() -> None:
    doc = envelope("s", "e1", "PokemonEncountered")
    trace = "0af7651916cd43dd8448eb211c80319c"
    entry = timeline.parse(encode(doc), "capture.status", [("traceparent", f"00-{trace}-b7ad6b7169203331-01".encode())],
                           2, 41)  # fmt: skip
    found = timeline.new("s")
    timeline.add(found, entry, T0)
    assert (found["events"][0]["partition"], found["events"][0]["offset"], found["trace_id"]) == (2, 41, trace)
    assert timeline.restore(json.loads(json.dumps(found))) == found  # what the table keeps, as it was
    for header in (b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01", b"garbage", b"\xff" * 55, b""):
        assert "trace_id" not in timeline.parse(encode(doc), "capture.status", [("traceparent", header)])
    assert timeline.parse(encode(doc), "capture.status", None, -1, True) == timeline.parse(
        encode(doc), "capture.status"
    )
    stored = json.loads(json.dumps(found))
    stored["trace_id"], stored["events"][0]["offset"] = "<script>", "12"
    again = timeline.restore(stored)
    assert again["trace_id"] is None and "offset" not in again["events"][0]


DLQ_HEADERS = [("pokesaga.dlq.reason", b"invalid_data: pokemon.name: unknown"), ("pokesaga.dlq.consumer", b"status")]


def test_a_dead_letter_is_kept_with_its_saga_once_and_a_saga_known_only_by_them_settles() -> None:
    letter = timeline.parse_dead_letter(b"s", "capture.status.dlq", DLQ_HEADERS, 0, 7, T0 * 1000)
    assert letter == {"saga_id": "s", "topic": "capture.status.dlq", "source": "capture.status", "partition": 0,
                      "offset": 7, "reason": "invalid_data: pokemon.name: unknown", "consumer": "status",
                      "time": iso(T0)}  # fmt: skip
    found = timeline.new("s")
    assert timeline.add_dead_letter(found, letter, T0) and not timeline.add_dead_letter(found, letter, T0 + 1)
    assert timeline.restore(json.loads(json.dumps(found)))["dead_letters"] == found["dead_letters"]
    assert timeline.expired(found, T0 + 11, 10) and not timeline.expired(found, T0 + 9, 10)
    for i in range(1, timeline.MAX_DEAD_LETTERS):
        timeline.add_dead_letter(found, letter | {"offset": 7 + i}, T0)
    with pytest.raises(NotAnEvent):
        timeline.add_dead_letter(found, letter | {"offset": 1000}, T0)
    dlq = "capture.status.dlq"
    bad = [(b"\xff", dlq), (None, dlq), (b"a\nb", dlq), (b"x" * 201, dlq), (b"s", "x.dlq"), (b"s", "capture.status")]
    for key, topic in bad:
        with pytest.raises(NotAnEvent):
            timeline.parse_dead_letter(key, topic, DLQ_HEADERS, 0, 1, 0)
    bare = timeline.parse_dead_letter(b"s", "capture.status.dlq", [("pokesaga.dlq.reason", b"\x1b[31mred")], 0, 1, -5)
    assert bare["reason"] == " [31mred" and bare["time"] is None and bare["consumer"] == ""


def test_refused_and_needs_operator_sagas_are_listed_so_and_wait_on_no_participant() -> None:
    refused = saga("refused", ["PokemonEncountered"], T0)
    letter = timeline.parse_dead_letter(b"refused", "capture.status.dlq", DLQ_HEADERS, 0, 7, T0 * 1000)
    timeline.add_dead_letter(refused, letter, T0 + 1)
    operator = saga("operator", ["PokemonEncountered", "PokemonParalyzed", "PokemonFainted"], T0 + 1)
    headers = [("pokesaga.dlq.reason", b"compensation_failed: IntegrityError: refused")]
    timeline.add_dead_letter(
        operator, timeline.parse_dead_letter(b"operator", "capture.failures.dlq", headers, 0, 3, 0), T0
    )
    running = saga("running", ["PokemonEncountered"], T0 + 2)
    index = indexed([refused, operator, running])
    now = T0 + 10
    overview = index.overview(now)
    assert {s: n for s, n in overview["states"].items() if n} == {"refused": 1, "needs_operator": 1, "running": 1}
    assert overview["participants"]["status"]["waiting"] == 1  # the running saga only
    assert sum(p["waiting"] for p in overview["participants"].values()) == 1
    for state, saga_id in (("refused", "refused"), ("needs_operator", "operator")):
        page = index.search(api.search(query(state=state), timeline.STATES, timeline.FIELDS), now)
        assert [(s["saga_id"], s["state"], s["waiting_on"]) for s in page["sagas"]] == [(saga_id, state, None)]
        view = timeline.view(refused if state == "refused" else operator, now, STUCK_AFTER)
        assert view["state"] == state and view["waiting_on"] is None
        assert any(c["command"].startswith("pokesaga inspect saga") for c in timeline.commands(view, set()))


def population(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` sagas of every kind, started a second apart: delivered, failed for several reasons,
    compensating, and running at several participants."""
    rng = random.Random(seed)
    found = []
    for i in range(n):
        kind = rng.choice(["delivered", "broke_free", "fainted", "compensating", "running"])
        trainer, pokemon = rng.choice(["Ash", "Misty", "Brock", "ash-ketchum"]), rng.choice(["Pidgey", "Mew", "Onix"])
        path = {"delivered": DELIVERED, "broke_free": BROKE_FREE, "compensating": BROKE_FREE[:5],
                "fainted": ["PokemonEncountered", "PokemonParalyzed", "PokemonFainted", "CaptureFailed"],
                "running": DELIVERED[: rng.randint(1, 4)]}[kind]  # fmt: skip
        reason = "fainted" if kind == "fainted" else "broke_free"
        found.append(saga(f"saga-{i:04d}-{kind}", path, T0 + i, trainer, pokemon, reason,
                          "combat" if kind == "fainted" else "pokeball"))  # fmt: skip
    return found


def indexed(timelines: list[dict[str, Any]]) -> Index:
    index = Index(timeline.TIMELINES, STUCK_AFTER)
    for t in timelines:
        index.put(t, t["events"])
    return index


@functools.cache
def population_views(now: float) -> list[dict[str, Any]]:
    """POPULATION's views at ``now``, newest first: the oracle's input (a handful of clock readings)."""
    return timeline.newest_first([timeline.view(t, now, STUCK_AFTER, restored=True) for t in POPULATION])


def expected(views: list[dict[str, Any]], query: Search) -> list[str]:
    """The sagas a query should list, newest first, from the timelines' own views (newest first)."""

    def fields(v: dict[str, Any]) -> list[str]:
        reason = v["events"][-1].get("reason") if len(v["events"]) > 1 else None
        return [(x or "").lower() for x in (v["saga_id"], v["trainer"], v["pokemon"], reason)]

    picked = []
    for v in views:
        f = fields(v)
        if query.state and v["state"] != query.state:
            continue
        if query.anywhere and not any(x.startswith(query.anywhere) for x in f):
            continue
        if query.saga and not v["saga_id"].startswith(query.saga):
            continue
        if any(not f[i].startswith(p) for i, p in query.prefixes):
            continue
        start = timeline.instant(v["started_at"])
        if (query.since is not None and start < query.since) or (query.until is not None and start >= query.until):
            continue
        picked.append(v["saga_id"])
    return picked


def pages(index: Index, query: Search, now: float) -> tuple[list[str], list[dict[str, Any]]]:
    listed, answers = [], []
    while True:
        answer = index.search(query, now)
        answers.append(answer)
        listed += [s["saga_id"] for s in answer["sagas"]]
        if answer["next"] is None:
            return listed, answers
        query = Search(**{**query.__dict__, "after": decode_cursor(answer["next"])})


POPULATION = population(240)
INDEX = indexed(POPULATION)

queries = st.builds(
    Search,
    state=st.sampled_from([None, *timeline.STATES]),
    anywhere=st.sampled_from([None, "ash", "m", "saga-01", "broke", "fainted", "zzz"]),
    prefixes=st.sampled_from([(), ((1, "ash"),), ((2, "mew"),), ((3, "fain"),), ((1, "brock"), (2, "o"))]),
    saga=st.sampled_from([None, "saga-00", "saga-0123", "Saga", "saga-01"]),
    since=st.sampled_from([None, T0 + 50, T0 + 239]),
    until=st.sampled_from([None, T0 + 100, T0 + 1000]),
    limit=st.integers(1, 60),
)


@settings(max_examples=150, deadline=None)
@given(query=queries, later=st.sampled_from([0.5, 30, 61, 400, 10_000]))
def test_the_index_lists_what_the_timelines_say_page_by_page_with_the_counts_per_state(
    query: Search, later: float
) -> None:
    now = T0 + 240 + later  # the clock moves: running sagas become stuck
    want = expected(population_views(now), query)
    listed, answers = pages(INDEX, query, now)
    assert listed == want  # every match once, newest first, across the pages
    assert all(len(a["sagas"]) <= query.limit for a in answers) and answers[0]["count"] == len(want)
    views, every_state = population_views(now), Search(**{**query.__dict__, "state": None})
    assert answers[0]["counts"] == {s: len(expected(views, Search(**{**every_state.__dict__, "state": s})))
                                    for s in timeline.STATES}  # fmt: skip


def test_the_overview_counts_sagas_where_they_wait_and_failures_by_reason_and_forgets() -> None:
    now = T0 + 240 + 1
    index = indexed(POPULATION)
    figures = index.overview(now)
    views = [timeline.view(t, now, STUCK_AFTER, restored=True) for t in POPULATION]
    assert figures["states"] == {s: sum(v["state"] == s for v in views) for s in timeline.STATES}
    waiting = Counter(v["waiting_on"] for v in views if v["waiting_on"])
    assert {p: f["waiting"] for p, f in figures["participants"].items() if f["waiting"]} == dict(waiting)
    stuck = Counter(v["waiting_on"] for v in views if v["state"] == "stuck")
    assert {p: f["stuck"] for p, f in figures["participants"].items() if f["stuck"]} == dict(stuck)
    failed = Counter(
        (v["events"][-1]["reason"], v["events"][-1]["failed_step"]) for v in views if v["state"] == "failed"
    )
    assert {(f["reason"], f["step"]): f["sagas"] for f in figures["failures"]} == dict(failed)
    assert figures["retained"] == len(POPULATION)
    for t in POPULATION:
        index.forget(t["saga_id"])
    empty = index.overview(now)
    assert empty["retained"] == 0 and not empty["failures"] and set(empty["states"].values()) == {0}
    assert index.search(Search(), now) == {"sagas": [], "count": 0, "counts": dict.fromkeys(timeline.STATES, 0),
                                           "next": None}  # fmt: skip


def test_a_saga_seen_again_moves_in_the_index_and_counts_its_new_events_once() -> None:
    index = Index(timeline.TIMELINES, STUCK_AFTER)
    t = saga("m", DELIVERED[:2], T0)
    index.put(t, t["events"])
    whole = saga("m", DELIVERED, T0)
    index.put(whole, whole["events"][2:])
    figures = index.overview(T0 + 1)
    assert figures["states"]["delivered"] == 1 and figures["states"]["running"] == 0
    assert figures["per_minute"] == dict.fromkeys(DELIVERED, 1)
    assert figures["tiles"]["started_per_minute"] == 1 and figures["tiles"]["finished_per_minute"] == 1
    assert figures["tiles"]["latency_ms"]["5m"]["count"] == 1
    assert index.overview(T0 + 61)["per_minute"] == {}  # a minute later, out of the window
    assert index.overview(T0 + 61)["tiles"]["outcomes"] == {"delivered": 1, "failed": 0}  # the hour's mix


@given(st.lists(st.floats(0.5, 100_000), min_size=1, max_size=300))
def test_latency_percentiles_are_within_the_bins_width_of_the_exact_ones(latencies: list[float]) -> None:
    window = Latencies()
    for ms in latencies:
        window.add(ms, T0)
    got = window.summary(T0, 5)
    ordered = sorted(latencies)
    assert got["count"] == len(latencies)
    for q in (50, 95, 99):
        exact = ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]
        assert got[f"p{q}"] == pytest.approx(exact, rel=0.03, abs=0.1)


def test_the_windows_forget_what_is_older_than_their_span() -> None:
    recent = Recent(60, 1)
    recent.add("a", T0)
    recent.add("a", T0 + 59.5)
    recent.add("b", float("nan"))
    assert recent.counts(T0 + 59.9) == {"a": 2} and recent.counts(T0 + 61) == {"a": 1}
    window = Latencies(60)
    window.add(100, T0)
    window.add(200, T0 + 600)
    assert window.summary(T0 + 600, 5)["count"] == 1 and window.summary(T0 + 600, 60)["count"] == 2
    assert window.summary(T0 + 5 * 3600, 60) == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert percentile(Counter(), 0, 0.5) is None


def cursor(document: Any) -> str:
    """A cursor the tracker never gave: ``document`` as JSON, in base64 as ``encode_cursor`` writes."""
    text = json.dumps(document) if not isinstance(document, str) else document
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def query(**params: str | list[str]) -> MultiDict[str]:
    found: MultiDict[str] = MultiDict()
    for k, v in params.items():
        for one in v if isinstance(v, list) else [v]:
            found.add(k, one)
    return found


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"colour": "red"}, "unknown query parameter 'colour'"),
        ({"q": ["a", "b"]}, "query parameter 'q' given more than once"),
        ({"state": "bogus"}, "unknown state 'bogus'"),
        ({"limit": "0"}, "limit must be a whole number from 1 to 1000"),
        ({"limit": "1e3"}, "limit must be a whole number"),
        ({"since": "yesterday"}, "since must be an RFC 3339 date-time"),
        ({"until": "2026-02-30T00:00:00Z"}, "until must be an RFC 3339 date-time"),
        ({"since": "2026-12-03T10:00:00Z", "until": "2026-12-03T09:00:00Z"}, "until is before since"),
        ({"after": "not-a-cursor"}, "after is not a cursor this tracker gave"),
        ({"after": encode_cursor((T0, "x"))[:-3] + "!!!"}, "after is not a cursor"),
        ({"q": "a\x00b"}, "q is 1 to 200 characters with no control character"),
        ({"trainer": "x" * 201}, "trainer is 1 to 200 characters"),
        ({"after": cursor([10**400, "x"])}, "after is not a cursor"),  # was a 500: too large for a float
        ({"after": cursor([float("inf"), "x"])}, "after is not a cursor"),
        ({"after": cursor("[" * 700)}, "after is not a cursor"),
        ({"after": "9" * 400}, "after is not a cursor"),
        ({"limit": "9" * 30}, "limit must be a whole number"),
        ({"limit": "-1"}, "limit must be a whole number"),
        ({"since": "9" * 30}, "since must be an RFC 3339 date-time"),
    ],
)
def test_a_bad_list_query_is_refused_with_one_line_saying_why(params: dict[str, Any], said: str) -> None:
    with pytest.raises(api.Refused) as refused:
        api.search(query(**params), timeline.STATES, timeline.FIELDS)
    assert str(refused.value).startswith(said) and "\n" not in str(refused.value) and len(str(refused.value)) < 400


def test_a_list_query_reads_as_a_search() -> None:
    got = api.search(
        query(state="failed", q="Ash", trainer="Misty", reason="BROKE", since="2026-12-03T10:00:00+01:00", limit="7"),
        timeline.STATES,
        timeline.FIELDS,
    )
    assert got == Search(state="failed", anywhere="ash", prefixes=((1, "misty"), (3, "broke")),
                         since=timeline.instant("2026-12-03T09:00:00Z"), limit=7)  # fmt: skip
    for key in ((T0, "a|b/c"), (-math.inf, "x"), (1.5, "")):
        assert decode_cursor(encode_cursor(key)) == key


@given(st.text(min_size=1, max_size=50))
def test_a_command_to_copy_names_the_saga_as_one_shell_word_whatever_its_id(saga_id: str) -> None:
    view = {"saga_id": saga_id, "state": "failed", "waiting_on": None,
            "dead_letters": [{"source": "capture.failures"}]}  # fmt: skip
    for command in timeline.commands(view, set()):
        words = shlex.split(command["command"])
        assert words[0] == "pokesaga" and (saga_id in words or f"--saga={saga_id}" in words)
    said = [c["command"] for c in timeline.commands(view, set())]
    assert said[0] == f"pokesaga trace {saga_argument(saga_id)}"
    assert f"pokesaga dlq replay capture.failures {saga_option(saga_id)}" in said
    running = {"saga_id": saga_id, "state": "stuck", "waiting_on": "combat.compensations", "dead_letters": []}
    assert "pokesaga run combat" in [c["command"] for c in timeline.commands(running, {"combat.compensations"})]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"id": "e1", "data": {"a": [1, 2]}}', {"id": "e1", "data": {"a": [1, 2]}}),
        (b"\xff\xfe not json", "\ufffd\ufffd not json"),
        (b'{"a": NaN}', '{"a": NaN}'),
        (b'{"a": 1e999}', '{"a": 1e999}'),
        (b"[" * 100_000 + b"]" * 100_000, "[" * 100_000 + "]" * 100_000),
        (None, None),
    ],
)
def test_a_records_value_is_shown_as_json_only_when_a_browser_can_read_it_back(
    value: bytes | None, expected: Any
) -> None:
    assert shown(value) == expected
    assert shown(b"x" * 300_000) == "x" * 256 * 1024 + "…"
