"""Liveness and readiness, as an orchestrator probes them, against a broker that goes away and returns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capture.processes import ServiceProcess
from capture.settings import Settings
from engine.local.broker import LocalKafka, chosen_broker, free_port
from tests.databases import with_databases
from tests.support import eventually, http_get


@pytest.mark.no_database  # the database side of readiness is the same check on either
@pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) or chosen_broker(Settings()) != "local",
    reason="stops and restarts a broker of its own: the local broker only",
)
async def test_readiness_follows_the_broker_down_and_back_without_a_restart(tmp_path: Path) -> None:
    broker = LocalKafka(Settings().kafka_cache_dir, state=tmp_path / "broker")
    address = broker.start()
    port = free_port()
    settings = with_databases(Settings(kafka_bootstrap_servers=address, data_dir=tmp_path), "health")
    service = ServiceProcess("status", settings, tmp_path / "logs", {"POKESAGA_METRICS_PORT": str(port)}).start()
    try:

        async def ready(expected: bool) -> bool:
            status, report = http_get(port, "/health/ready")
            return status == (200 if expected else 503) and report is not None

        await eventually(lambda: ready(True), timeout=90, what="ready")
        status, report = http_get(port, "/health/ready")
        assert report["broker"] and report["databases"] == {"status": True}
        # status.compensations reads capture.failures.status, .combat and capture.failures: 3 × 3
        assert report["partitions"] == {"status": 3, "status.compensations": 9}
        assert http_get(port, "/metrics")[1].count("pokesaga_") > 0

        broker.stop()
        await eventually(lambda: ready(False), timeout=60, what="not ready once the broker is down")
        status, report = http_get(port, "/health/ready")
        assert report["broker"] is False and report["ready"] is False
        assert http_get(port, "/health/live")[0] == 200  # down broker: not ready, still alive

        assert broker.start() == address  # the broker returns where it was
        await eventually(lambda: ready(True), timeout=90, what="ready again once the broker is back")
        assert service.alive and service.proc is not None and service.proc.returncode is None
        assert http_get(port, "/nowhere")[0] == 404
    finally:
        code = service.stop()
        broker.stop()
    assert code == 0, (tmp_path / "logs" / "status.log").read_text()[-3000:]
