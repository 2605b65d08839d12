"""``pokesaga bench --peer dbos`` without the peers extra. The peer's run itself, beside ours in one
JSON line, is tests/e2e/test_bench.py's first test: the services are started once for both."""

from __future__ import annotations

import importlib.util

import pytest

from capture.cli import main


@pytest.mark.no_database  # refused before anything runs
def test_without_the_extra_the_peer_bench_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dbos" else find_spec(name, *a))
    assert main(["bench", "--peer", "dbos", "--sagas", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "pokesaga bench --peer dbos needs: pip install 'pokesaga[peers]'"
    assert captured.out == ""
