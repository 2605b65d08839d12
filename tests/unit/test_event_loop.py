"""The services' event loop: uvloop where it is installed and asked for, never over TLS."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.cli.common import run_loop

uvloop = pytest.importorskip("uvloop")


def loop_of(use_uvloop: bool, asked: bool = False, tls: bool = False) -> type:
    found: list[type] = []

    async def main() -> None:
        found.append(type(asyncio.get_running_loop()))

    run_loop(main(), use_uvloop, asked, tls)
    return found[0]


def test_uvloop_by_default_and_asyncio_when_turned_off() -> None:
    assert loop_of(True) is uvloop.Loop
    assert loop_of(False) is not uvloop.Loop


def test_over_tls_asyncio_s_own_loop_whose_tls_close_does_not_wait_30_s(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert loop_of(True, tls=True) is not uvloop.Loop  # the default: in silence
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert loop_of(True, asked=True, tls=True) is not uvloop.Loop  # asked for explicitly: said why not
    (line,) = [r.getMessage() for r in caplog.records]
    assert "over TLS" in line and "30 s" in line
