"""What Docker itself cannot check about the image: the intent behind the Dockerfile and the build
context, and the checkout a build leaves behind. The image is built and run for real, on a Docker
engine, by the container suite (tests/containers): its user, its health check, every container
compose makes of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IGNORED = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}


def test_users_keep_the_official_python_image_as_the_default_base() -> None:
    """Without a registry the base is built from Debian (scripts/images); with one, nothing changes
    for a user: python:3.11-slim, the Python the project asks for."""
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert default is not None and default[1] == "python:3.11-slim"
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert wanted == ">=3.11"


def test_the_build_context_leaves_out_local_state_and_keeps_the_host_wheels() -> None:
    """Docker copies whatever the context holds: the databases and logs of local runs, the virtualenv,
    the git history and a previous build would land in the wheel stage's layers."""
    assert {".pokesaga", ".venv", ".git", "artifacts", "build", "dist", "*.egg-info", "tests"} <= IGNORED
    assert not {"wheels", "wheels/"} & IGNORED  # the offline build's only source of dependencies


def test_building_a_wheel_leaves_the_checkout_lintable(tmp_path: Path) -> None:
    """``pip wheel .`` (scripts/images does it to build without a registry) leaves build/ and an
    egg-info in the checkout; the linters still pass on it (mypy once found every module twice)."""
    left = [ROOT / "build", ROOT / "pokesaga.egg-info"]
    before = {path: path.exists() for path in left}
    try:
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert built.returncode == 0, built.stderr[-2000:]
        assert (ROOT / "build" / "lib" / "capture" / "__init__.py").exists()
        venv = Path(sys.executable).parent
        for linter in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy", "."], ["lint-imports"]):
            done = subprocess.run([str(venv / linter[0]), *linter[1:]], cwd=ROOT, capture_output=True, text=True)
            assert done.returncode == 0, f"{' '.join(linter)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    finally:
        for path, existed in before.items():
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
