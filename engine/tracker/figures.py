"""Figures over a sliding window of time, in bounded memory: counts per key over the last
minutes, and latency percentiles from log-scale histograms. Pure: the caller gives the times
(epoch seconds), so a tracker restored from its table can feed them again from the timelines.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable

GROWTH = 1.04  # a histogram bin is 4 % wide: a percentile is within 2 % of the true value
_LOG = math.log(GROWTH)


class Recent:
    """How many times each key was seen in the last ``span`` seconds, in buckets of ``step``
    seconds (the window moves a bucket at a time: a count is exact to ``step``)."""

    def __init__(self, span: float, step: float) -> None:
        self.span, self.step = span, step
        self.buckets: dict[int, Counter[Hashable]] = {}

    def add(self, key: Hashable, at: float, n: int = 1) -> None:
        if not math.isfinite(at):
            return
        self.buckets.setdefault(int(at // self.step), Counter())[key] += n

    def counts(self, now: float) -> Counter[Hashable]:
        """Every key's count over the window ending at ``now``; older buckets are dropped."""
        first = int((now - self.span) // self.step) + 1
        total: Counter[Hashable] = Counter()
        for bucket in list(self.buckets):
            if bucket < first:
                del self.buckets[bucket]
            elif bucket <= int(now // self.step):
                total.update(self.buckets[bucket])
        return total


class Latencies:
    """End-to-end latencies by the minute they ended in, as histograms of 4 % bins, for an hour."""

    def __init__(self, minutes: int = 60) -> None:
        self.minutes = minutes
        self.by_minute: dict[int, Counter[int]] = {}

    def add(self, ms: float, at: float) -> None:
        if not (math.isfinite(ms) and math.isfinite(at)) or ms < 0:
            return
        self.by_minute.setdefault(int(at // 60), Counter())[_bin(ms)] += 1
        oldest = int(at // 60) - self.minutes
        for minute in [m for m in self.by_minute if m <= oldest]:
            del self.by_minute[minute]

    def summary(self, now: float, minutes: int) -> dict[str, float | int | None]:
        """``count``, ``p50``, ``p95``, ``p99`` (ms) of the sagas that ended in the last ``minutes``."""
        last = int(now // 60)
        merged: Counter[int] = Counter()
        for minute, histogram in self.by_minute.items():
            if last - minutes < minute <= last:
                merged.update(histogram)
        count = sum(merged.values())
        return {"count": count, **{f"p{q}": percentile(merged, count, q / 100) for q in (50, 95, 99)}}


def percentile(histogram: Counter[int], count: int, q: float) -> float | None:
    """The ``q`` quantile of a histogram of ``_bin`` values: the middle of the bin it falls in."""
    if not count:
        return None
    rank = max(1, math.ceil(q * count))
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if seen >= rank:
            return _middle(b)
    return None  # unreachable: the counts add up to ``count``


def _bin(ms: float) -> int:
    return -1 if ms < 0.01 else int(math.log(ms / 0.01) // _LOG)


def _middle(b: int) -> float:
    return 0.0 if b < 0 else round(0.01 * GROWTH ** (b + 0.5), 1)


class Freshness:
    """How far behind its topics the tracker reads: the records it has read, and the staleness of
    the last one, seconds from the record's timestamp (its producer's clock: when it was written)
    to when the tracker read it, as a user of the console sees it late. None before any record;
    a timestamp in the future reads as 0 (any client writes any timestamp)."""

    def __init__(self) -> None:
        self.records = 0
        self.staleness: float | None = None
        self.read_at: float | None = None

    def read(self, timestamp: float | None, now: float) -> None:
        self.records += 1
        self.read_at = now
        if timestamp is not None and math.isfinite(timestamp) and timestamp > 0:
            self.staleness = max(0.0, now - timestamp)

    def figures(self) -> dict[str, float | int | None]:
        staleness = None if self.staleness is None else round(self.staleness, 3)
        return {"records": self.records, "staleness_s": staleness, "read_at": self.read_at}
