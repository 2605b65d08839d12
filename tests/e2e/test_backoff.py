"""A record waiting to be retried holds up nothing else: it is parked in the service's database,
not waited for, so health checks and a stop are answered at once during its backoff, and the
parked record is still there after the stop."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from capture.processes import ServiceProcess
from capture.settings import Settings
from capture.starter import publish, start_event
from engine.local.broker import free_port
from tests.conftest import new_broker
from tests.databases import database_urls, rows
from tests.support import eventually, http_get


@pytest.mark.no_database  # the event loop answering during a backoff; parked rows on PostgreSQL: test_parked, test_loop
def test_a_record_waiting_to_be_retried_blocks_neither_health_nor_a_stop(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On a broker of its own: no other status instance may take the record."""
    port = free_port()
    env = {
        "POKESAGA_FAULTS": "status=1",  # the status step always fails ...
        "POKESAGA_RETRY__INITIAL_INTERVAL": "120",  # ... and waits two minutes before each retry
        "POKESAGA_RETRY__MAXIMUM_INTERVAL": "120",
        "POKESAGA_METRICS_PORT": str(port),
    }
    data = tmp_path_factory.mktemp("backoff")
    with new_broker(data / "broker") as kafka_bootstrap:
        settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=data, **database_urls(data.name))
        process = ServiceProcess("status", settings, data / "logs", extra_env=env).start()
        saga = _stops_while_waiting(process, port, kafka_bootstrap)
        parked = "select reason, attempts, last_error from parked where saga_id = :s"
        assert rows(settings, "status", parked, s=saga) == [("retrying", 1, "TransientFault: injected transient fault")]


def _stops_while_waiting(process: ServiceProcess, port: int, kafka_bootstrap: str) -> str:
    try:
        asyncio.run(eventually(lambda: _ready(port), timeout=60, what="status ready"))
        saga = f"backoff-{uuid.uuid4().hex[:8]}"
        asyncio.run(publish(kafka_bootstrap, [start_event(saga, {"name": f"B-{saga}"}, {"name": "Pidgey"})]))
        waiting = "attempt 1; next at +120.00s"
        asyncio.run(eventually(lambda: _logged(process.log_path, waiting), timeout=60, what="a retry wait"))
        for _ in range(3):  # the event loop answers while the record waits
            assert http_get(port, "/health/live")[0] == 200
        process.terminate()
        code = process.proc.wait(timeout=30) if process.proc else None  # well before the backoff ends
        assert code == 0, f"status exited with {code} (log: {process.log_path})"
        return saga
    finally:
        process.stop()


async def _ready(port: int) -> bool:
    return http_get(port, "/health/ready")[0] == 200


async def _logged(path: Path, text: str) -> bool:
    return await asyncio.to_thread(lambda: path.exists() and text in path.read_text())
