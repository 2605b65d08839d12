"""The tracker's index of the sagas it holds: what the list and the overview read, answered
without walking every timeline.

Each timeline the tracker holds has one ``Row``: the fields a list shows and searches, its place
in start-time order, and, for a saga with no outcome, what its state depends on (so a state that
moves with the clock, stuck or retrying, costs a few comparisons). Counters follow the rows as
they change: sagas per outcome, failed sagas per reason, and, over a sliding window, events per
type, starts, outcomes and end-to-end latencies. Pure: no I/O, the caller gives the times.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.observe.timeline import (
    NEEDS_OPERATOR,
    REFUSED,
    WAITING_STATES,
    Timelines,
    duration_ms,
    instant,
    last_progress,
    next_attempt,
)
from engine.tracker.figures import Latencies, Recent

SEPARATOR = "\x00"  # in no searched field (a timeline's strings have no NUL) and in no search
NO_START = -math.inf
MAX_SHARED = 64  # a name, a reason: longer text is no value repeated


@dataclass(slots=True)
class Row:
    saga_id: str
    shown: tuple[str | None, ...]  # the summary fields (trainer, Pokémon), as the timeline has them
    searched: tuple[str, ...]  # saga id, summary fields, reason: lower-cased, for search
    haystack: str  # the same, each after a SEPARATOR: a prefix of any is one substring test
    started: float  # the start event's time (epoch seconds), NO_START when there is none
    started_at: str | None
    ended_at: str | None
    outcome: str | None
    final: str | None  # the state an outcome ends in; None while the saga runs
    held: str | None  # refused or needs_operator: a state a dead letter decided, with no outcome
    reason: str | None
    failed_step: str | None
    duration_ms: float | None
    progress: float  # when the tracker last saw an event of it
    retry_due: float | None  # the next attempt the participant it waits on announced
    compensating: bool
    waiting_on: str | None
    retrying: dict[str, Any] | None
    settled: float | None  # when its retention started (``Timelines.settled_at``), None while kept

    @property
    def key(self) -> tuple[float, str]:
        return (self.started, self.saga_id)

    def state(self, now: float, stuck_after: float) -> str:
        """``Timelines.state``, from what the row keeps."""
        if self.final is not None:
            return self.final
        if self.held is not None:
            return self.held
        if self.retry_due is not None and now - self.retry_due <= stuck_after:
            return "retrying"
        if now - self.progress > stuck_after:
            return "stuck"
        return "compensating" if self.compensating else "running"


class Index:
    """Rows by saga id and in start-time order, with the counters the overview reads."""

    def __init__(self, timelines: Timelines, stuck_after: float) -> None:
        self.timelines = timelines
        self.stuck_after = stuck_after
        self._rows: dict[str, Row] = {}
        self.pending: dict[str, dict[str, Any]] = {}  # timelines changed since their row was made
        self.order: list[Row] = []  # by (started, saga id): oldest first
        self.open: dict[str, Row] = {}  # the rows with no outcome
        self.finished: Counter[str] = Counter()  # held sagas per final state
        self.failures: Counter[tuple[str, str]] = Counter()  # held failed sagas per (reason, step)
        self.events = Recent(60, 1)  # events seen per type, last minute
        self.starts = Recent(60, 1)  # start events and outcomes seen, last minute
        self.outcomes = Recent(3600, 60)  # outcomes per final state, last hour
        self.latencies = Latencies(60)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def rows(self) -> dict[str, Row]:
        """Every row, by saga id, each made from its timeline as it is now."""
        self.settle()
        return self._rows

    def settle(self) -> None:
        """The rows of the timelines changed since they were made, made: before anything is read."""
        if self.pending:
            pending, self.pending = self.pending, {}
            for timeline in pending.values():
                self._put(timeline)

    # -- keeping the rows ------------------------------------------------------------

    def put(self, timeline: dict[str, Any], new: Iterable[dict[str, Any]] = ()) -> None:
        """The row of ``timeline`` to be made anew (when the rows are next read: a saga whose records
        come one after another has its row made once); ``new``: its events just seen, counted now."""
        self.pending[timeline["saga_id"]] = timeline
        for event in new:
            self._count(event, timeline)

    def _put(self, timeline: dict[str, Any]) -> None:
        rows = self._rows
        old = rows.pop(timeline["saga_id"], None)
        row = self._row(timeline) if timeline["events"] else None  # notices or dead letters alone: not listed
        if old is not None:
            self._drop(old, keep_place=row is not None and row.key == old.key)
        if row is None:
            return
        rows[row.saga_id] = row
        if old is None or row.key != old.key:
            bisect.insort(self.order, row, key=_key)
        else:
            self.order[self._place(old)] = row
        if row.final is None:
            self.open[row.saga_id] = row
        else:
            self.finished[row.final] += 1
            if row.outcome in self.timelines.failed_outcomes:
                self.failures[(row.reason or "", row.failed_step or "")] += 1

    def restored(self, timeline: dict[str, Any]) -> None:
        """A timeline the tracker recovered (its changelog): its row, and its recent events counted."""
        self.put(timeline, timeline["events"])

    def forget(self, saga_id: str) -> None:
        self.pending.pop(saga_id, None)
        row = self._rows.pop(saga_id, None)
        if row is not None:
            self._drop(row)

    def _place(self, row: Row) -> int:
        return bisect.bisect_left(self.order, row.key, key=_key)

    def _drop(self, row: Row, keep_place: bool = False) -> None:
        if not keep_place:
            del self.order[self._place(row)]
        if row.final is None:
            self.open.pop(row.saga_id, None)
        else:
            self.finished[row.final] -= 1
            if row.outcome in self.timelines.failed_outcomes:
                key = (row.reason or "", row.failed_step or "")
                self.failures[key] -= 1
                if self.failures[key] <= 0:
                    del self.failures[key]

    def _count(self, event: dict[str, Any], timeline: dict[str, Any]) -> None:
        seen = float(event.get("seen_at") or 0.0)
        self.events.add(event["type"], seen)
        if event["type"] == self.timelines.start:
            self.starts.add("started", seen)
        elif event["type"] in self.timelines.outcomes:
            self.starts.add("finished", seen)
            self.outcomes.add(self.timelines.outcomes[event["type"]], seen)
            took = duration_ms(timeline)
            if took is not None:
                self.latencies.add(took, seen)

    def _row(self, timeline: dict[str, Any]) -> Row:
        t = self.timelines
        events = timeline["events"]
        outcome = timeline["outcome"]
        failure = next((e for e in reversed(events) if e.get("reason")), None)
        reason = failure.get("reason") if failure else None
        held = NEEDS_OPERATOR if t.needs_operator(timeline) else REFUSED if t.refused(timeline) else None
        waiting_on = None if held else t.waiting_on(timeline)  # a dead letter decided it: waits on no one
        notice = None if held else t.retrying(timeline)
        shown = tuple(_shared(timeline.get(f)) for f in t.summary_fields)
        started = instant(timeline.get("started_at")) if any(e["type"] == t.start for e in events) else NO_START
        saga_id = timeline["saga_id"]
        lowered = _searchable(saga_id)
        searched = (saga_id if lowered == saga_id else lowered, *(_shared(_searchable(s)) for s in (*shown, reason)))
        return Row(
            saga_id=saga_id,
            shown=shown,
            searched=searched,
            haystack="".join(SEPARATOR + field for field in searched),
            started=started,
            started_at=timeline.get("started_at"),
            ended_at=timeline.get("ended_at"),
            outcome=_shared(outcome),
            final=t.outcomes[outcome] if outcome else None,
            held=held,
            reason=_shared(reason),
            failed_step=_shared(failure.get("failed_step")) if failure else None,
            duration_ms=duration_ms(timeline),
            progress=last_progress(timeline),
            retry_due=next_attempt(notice) if notice else None,
            compensating=any(e["type"] in t.compensating for e in events),
            waiting_on=waiting_on,
            retrying=notice,
            settled=t.settled_at(timeline),
        )

    # -- reading ----------------------------------------------------------------------

    def listed(self, row: Row, state: str) -> dict[str, Any]:
        return {
            "saga_id": row.saga_id,
            **dict(zip(self.timelines.summary_fields, row.shown, strict=True)),
            "state": state,
            "waiting_on": row.waiting_on if state in WAITING_STATES else None,
            "retrying": row.retrying if state == "retrying" else None,
            "started_at": row.started_at,
            "ended_at": row.ended_at,
            "outcome": row.outcome,
            "duration_ms": row.duration_ms,
            "reason": row.reason,
            "failed_step": row.failed_step,
            "last_progress": row.progress,
        }

    def search(self, query: Search, now: float) -> dict[str, Any]:
        """A page of the sagas that match ``query``, newest first, with the counts per state.

        The time range is cut from the ordered rows by bisection; each search term narrows what
        is left in one pass (a list comprehension each: ~50 ns a row); the page is read from the
        newest end, from the cursor on."""
        self.settle()
        order, stuck_after = self.order, self.stuck_after
        lo = bisect.bisect_left(order, (query.since, ""), key=_key) if query.since is not None else 0
        hi = bisect.bisect_left(order, (query.until, ""), key=_key) if query.until is not None else len(order)
        counts: Counter[str] = Counter()
        if query.since is None and query.until is None and not query.searches:
            found = order  # every saga: the counters say how many of each
            counts.update(self.finished)
            counts.update(row.state(now, stuck_after) for row in self.open.values())
        else:
            found = query.narrow(order[lo:hi])
            counts.update(row.final or row.state(now, stuck_after) for row in found)
        end = len(found) if query.after is None else bisect.bisect_left(found, query.after, key=_key)
        page: list[dict[str, Any]] = []
        more = False
        for i in range(end - 1, -1, -1):
            row = found[i]
            state = row.final or row.state(now, stuck_after)
            if query.state is not None and state != query.state:
                continue
            if len(page) == query.limit:
                more = True
                break
            page.append(self.listed(row, state))
        count = counts[query.state] if query.state is not None else sum(counts.values())
        return {
            "sagas": page,
            "count": count,
            "counts": {s: counts.get(s, 0) for s in self.timelines.states},
            "next": encode_cursor(self.rows[page[-1]["saga_id"]].key) if more else None,
        }

    def overview(self, now: float) -> dict[str, Any]:
        """The sagas per state and per participant they wait on, failures by reason, the window's figures."""
        self.settle()
        states: Counter[str] = Counter(self.finished)
        waiting: dict[str, Counter[str]] = {}
        for row in self.open.values():
            state = row.state(now, self.stuck_after)
            states[state] += 1
            if row.waiting_on is not None:
                waiting.setdefault(row.waiting_on, Counter())[state] += 1
        participants = {
            name: {
                "waiting": sum(waiting.get(name, {}).values()),
                "retrying": waiting.get(name, Counter())["retrying"],
                "stuck": waiting.get(name, Counter())["stuck"],
            }
            for name in self.timelines.participants
        }
        window = self.starts.counts(now)
        mix = self.outcomes.counts(now)
        return {
            "retained": len(self.rows),
            "states": {s: states.get(s, 0) for s in self.timelines.states},
            "participants": participants,
            "per_minute": dict(self.events.counts(now)),
            "failures": [
                {"reason": reason or None, "step": step or None, "sagas": n}
                for (reason, step), n in sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "tiles": {
                "started_per_minute": window["started"],
                "finished_per_minute": window["finished"],
                "outcomes": {state: mix.get(state, 0) for state in self.timelines.outcomes.values()},
                "latency_ms": {"5m": self.latencies.summary(now, 5), "60m": self.latencies.summary(now, 60)},
            },
        }


@dataclass(frozen=True)
class Search:
    """What a list asks for: every field optional (``prefixes``: lower-cased, by searched field)."""

    state: str | None = None
    anywhere: str | None = None  # a prefix of any searched field, lower-cased
    prefixes: tuple[tuple[int, str], ...] = ()  # (field index in Row.searched, lower-cased prefix)
    saga: str | None = None  # a saga id prefix, as typed
    since: float | None = None
    until: float | None = None
    limit: int = 50
    after: tuple[float, str] | None = None

    @property
    def searches(self) -> bool:
        return self.anywhere is not None or bool(self.prefixes) or self.saga is not None

    def narrow(self, rows: list[Row]) -> list[Row]:
        """The rows that match every search term, in the order given."""
        if self.saga is not None:
            saga = self.saga
            rows = [r for r in rows if r.saga_id.startswith(saga)]
        if self.anywhere is not None:
            needle = SEPARATOR + self.anywhere  # a prefix of any field: after a separator
            rows = [r for r in rows if needle in r.haystack]
        for i, prefix in self.prefixes:
            rows = [r for r in rows if r.searched[i].startswith(prefix)]
        return rows


def _key(row: Row) -> tuple[float, str]:
    return (row.started, row.saga_id)


def _shared(text: Any) -> Any:
    """One string for each of the values many rows repeat (names, reasons, steps, outcomes)."""
    return sys.intern(text) if type(text) is str and len(text) <= MAX_SHARED else text


def _searchable(text: str | None) -> str:
    return (text or "").replace(SEPARATOR, "").lower()


def encode_cursor(key: tuple[float, str]) -> str:
    started = None if math.isinf(key[0]) else key[0]
    return base64.urlsafe_b64encode(json.dumps([started, key[1]]).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str] | None:
    """The key a cursor names, or None when it is no cursor ``encode_cursor`` made."""
    if len(text) > 1000:
        return None
    try:
        started, saga_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError, binascii.Error):
        return None
    except RecursionError:  # a cursor nested deeper than any encode_cursor makes
        return None
    if not isinstance(saga_id, str) or not (started is None or type(started) in (int, float)):
        return None
    try:
        at = NO_START if started is None else float(started)  # an integer too large for a float: none
    except OverflowError:
        return None
    if started is not None and not math.isfinite(at):
        return None
    return (at, saga_id)
