"""Liveness, readiness and ``/metrics``, on one small HTTP server per process.

- ``GET /health/live``: 200 while the event loop runs its checks (it is not stuck), else 503.
- ``GET /health/ready``: 200 when the broker answers, every database answers and every
  participant of the process has partitions assigned, else 503; the JSON body says which.
  An instance beyond a topic's partition count has none and stays not ready: a standby.
- ``GET /metrics``: the Prometheus metrics.

The checks run on the event loop every ``health_interval`` seconds; the HTTP thread only
reads their last result, so a probe never waits on the broker or a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiokafka import AIOKafkaClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from engine.broker import security

log = logging.getLogger(__name__)


class PortUnavailable(OSError):
    """The endpoints cannot be served on the configured address; the message says which and why."""


@dataclass
class Health:
    liveness_timeout: float = 30.0
    beat: float = field(default_factory=time.monotonic)
    broker: bool = False
    databases: dict[str, bool] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)

    def live(self) -> bool:
        return time.monotonic() - self.beat < self.liveness_timeout

    def ready(self) -> bool:
        return (
            self.live()
            and self.broker
            and all(self.databases.values())
            and bool(self.partitions)
            and all(n > 0 for n in self.partitions.values())
        )

    def report(self) -> dict[str, Any]:
        return {
            "ready": self.ready(),
            "live": self.live(),
            "broker": self.broker,
            "databases": dict(self.databases),
            "partitions": dict(self.partitions),
        }


async def check_forever(
    health: Health,
    bootstrap: str,
    engines: dict[str, Engine],
    assignments: Callable[[], dict[str, int]],
    interval: float,
    stop: asyncio.Event,
) -> None:
    """Refresh ``health`` every ``interval`` seconds until ``stop``."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **security.options_for(bootstrap))
    try:
        while not stop.is_set():
            health.broker = await _broker_answers(client, timeout=max(interval, 2.0))
            for service, engine in engines.items():
                health.databases[service] = await _database_answers(engine)
            health.partitions = assignments()
            health.beat = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        await client.close()


async def _broker_answers(client: AIOKafkaClient, timeout: float) -> bool:
    async def probe() -> None:
        if not client.cluster.brokers():
            await client.bootstrap()  # also after a start with the broker down
        await client.fetch_all_metadata()

    try:
        await asyncio.wait_for(probe(), timeout)
        return True
    except Exception:  # any failure to answer is the answer
        return False


async def _database_answers(engine: Engine) -> bool:
    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(ping), 5)
        return True
    except Exception:
        return False


def serve_http(port: int | None, host: str = "127.0.0.1", health: Health | None = None) -> ThreadingHTTPServer | None:
    """Serve the endpoints on ``host:port`` in a daemon thread; nothing when no port is given."""
    if port is None:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path in ("/health/live", "/health/ready") and health is not None:
                ok = health.live() if path == "/health/live" else health.ready()
                self._send(200 if ok else 503, json.dumps(health.report()).encode(), "application/json")
            else:
                known = "/metrics, /health/live, /health/ready" if health else "/metrics"
                body = json.dumps({"error": f"no such path {path or '/'}; try {known}"}).encode()
                self._send(404, body, "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the http.server API)
            pass  # probes every few seconds would drown the service's log

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:  # e.g. the port is taken: one line, naming the settings
        raise PortUnavailable(
            f"POKESAGA_METRICS_PORT: cannot serve /metrics and /health on {host}:{port}: {exc.strerror or exc}"
            " (another process holds it? choose another POKESAGA_METRICS_PORT, or check POKESAGA_METRICS_HOST)"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("serving /metrics and /health/live|ready on %s:%d", host, port)
    return server


def assigned(loops: Sequence[Any]) -> Callable[[], dict[str, int]]:
    """How many partitions each loop's consumer has, read when called (a loop may be replaced)."""
    return lambda: {loop.name: len(loop.consumer.assignment()) for loop in loops}
