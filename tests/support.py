"""Helpers for tests that talk to the real broker: conditions polled with a deadline; and the
documentation (README.md and docs/*.md), read by the tests that check what it says."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from engine.broker import kafka


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds. The polls
    start 0.1 s apart and spread to 0.5 s: a check that asks the broker costs CPU the services
    being waited on need (the suites are bound by the machine's two cores: docs/testing.md)."""
    deadline = time.monotonic() + timeout
    pause = 0.1
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(0.5, pause * 1.5)


async def holds(value: Callable[[], object], wanted: object) -> bool:
    """``value() == wanted``, for ``eventually`` (a synchronous check, such as a database count)."""
    return value() == wanted


async def caught_up(bootstrap: str, groups: Mapping[str, Iterable[str]]) -> bool:
    """True when every group has committed up to the end of every partition it reads. One admin
    client and one consumer for every group: this is polled, and each client costs a connection."""
    topics = sorted({t for ts in groups.values() for t in ts})
    admin, reader = kafka.admin_client(bootstrap), kafka.consumer(bootstrap, None)
    try:
        await admin.start()
        await reader.start()
        described = await admin.describe_topics(topics)
        partitions = {d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]]
                      for d in described}  # fmt: skip
        ends = await reader.end_offsets([tp for tps in partitions.values() for tp in tps])
        for group, read in groups.items():
            tps = [tp for t in read for tp in partitions.get(t, [])]
            done = await kafka.committed_through(admin, group, tps)
            if any(done.get(tp, 0) < ends[tp] for tp in tps):
                return False
    except KafkaError:  # a new broker or group, a broker down: not yet
        return False
    finally:
        await reader.stop()
        await admin.close()
    return True


async def in_sync(bootstrap: str, topics: Iterable[str]) -> bool:
    """True when every partition of ``topics`` has a leader and all its replicas in sync."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        described = await admin.describe_topics(list(topics))
    except KafkaError:  # a broker or controller changing hands: not yet
        return False
    finally:
        await admin.close()
    return all(
        d["partitions"] and all(p["leader"] >= 0 and len(p["isr"]) == len(p["replicas"]) for p in d["partitions"])
        for d in described
    )


def http_get(port: int, path: str) -> tuple[int, Any]:
    """GET http://127.0.0.1:PORT/PATH: (status, JSON document or text); (0, None) while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, _body(answer.headers.get_content_type(), answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, _body(refused.headers.get_content_type(), refused.read())
    except OSError:
        return 0, None


def _body(content_type: str, body: bytes) -> Any:
    return json.loads(body) if content_type == "application/json" else body.decode()


Samples = Counter[tuple[str, tuple[tuple[str, str], ...]]]


def metric_samples(port: int) -> Samples:
    """A process's /metrics: (sample name, sorted labels) → value."""
    found: Samples = Counter()
    for family in text_string_to_metric_families(http_get(port, "/metrics")[1]):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return found


def total(all_samples: Iterable[Samples], name: str, **labels: str) -> float:
    """The sum of ``name`` over processes, for the samples whose labels include ``labels``."""
    return sum(
        value
        for found in all_samples
        for (sample, sample_labels), value in found.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$")


def documentation() -> dict[Path, str]:
    """README.md, then every docs/*.md, by path: what a reader is shown."""
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return {path: path.read_text(encoding="utf-8") for path in paths}


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every Markdown heading in ``text``, code blocks excepted."""
    found, fenced = [], False
    for index, line in enumerate(text.splitlines()):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := HEADING.match(line)):
            found.append((index, len(heading[1]), heading[2]))
    return found


def doc_section(title: str) -> str:
    """The section headed ``title`` (at any level), in README.md or in whichever docs/*.md it
    moved to: its heading's line up to the next heading of the same level or higher."""
    for text in documentation().values():
        lines = text.splitlines()
        marks = headings(text)
        for n, (index, level, name) in enumerate(marks):
            if name == title:
                end = next((i for i, lvl, _ in marks[n + 1 :] if lvl <= level), len(lines))
                return "\n".join(lines[index:end]) + "\n"
    raise AssertionError(f"no section {title!r} in README.md or docs/*.md")


def doc_containing(marker: str) -> str:
    """The text of the one document (README.md or docs/*.md) that holds ``marker``."""
    holding = [text for text in documentation().values() if marker in text]
    assert len(holding) == 1, f"{marker!r} is in {len(holding)} documents, not one"
    return holding[0]


def terminate(process: subprocess.Popen[bytes], grace: float = 30) -> int:
    """Stop ``process`` as an operator would: SIGTERM; SIGKILL if it has not left within ``grace``
    seconds. Its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def connect(bootstrap: str, options: Mapping[str, Any]) -> None:
    """A producer with aiokafka's ``options`` started against ``bootstrap``, then stopped: raises what
    its start raises (a listener that refuses it)."""

    async def start() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
        try:
            await producer.start()
        finally:
            await producer.stop()

    asyncio.run(start())
