"""A wrong argument gets one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from runtime.cli import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["frobnicate"], "invalid choice"),
        (["start", "--trainer", "Sacha", "--pokemon"], "--pokemon"),
        (["start", "--pokemon", "Agumon", "--trainer", "Sacha"], "unknown Pokémon"),
        (["start", "--pokemon", "Mew", "--trainer", "Sacha", "--level", "abc"], "whole number"),
        (["start", "--pokemon", "Mew", "--trainer", "Sacha", "--level", "101"], "less than or equal to 100"),
        (["start", "--pokemon", "Mew", "--trainer", ""], "at least 1 character"),
        (["run", "pikachu"], "unknown service"),
        (["inspect", "gym", "x"], "invalid choice"),
        (["kafka", "restart"], "invalid choice"),
    ],
)
def test_a_wrong_argument_gets_a_one_line_error(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_a_bad_setting_in_the_environment_gets_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POKESAGA_PARTITIONS", "many")
    assert main(["inspect", "trainer", "Nobody"]) == 2
    err = capsys.readouterr().err
    assert "partitions" in err and len(err.strip().splitlines()) == 1


def test_inspecting_an_unknown_trainer_shows_empty_state(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path), "inspect", "trainer", "Nobody", "--json"]) == 0
    assert '"trainer": "Nobody"' in capsys.readouterr().out
