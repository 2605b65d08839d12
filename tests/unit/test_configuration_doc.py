"""docs/configuration.md is generated from the settings classes (engine.settings.document): it
names every setting, and a field changed without regenerating the page fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capture.settings import Settings as CaptureSettings
from engine.settings import Settings, document
from examples.transfer.settings import Settings as TransferSettings

pytestmark = pytest.mark.no_database

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "configuration.md"
TARGETS = "capture.settings:Settings examples.transfer.settings:Settings"
REGENERATE = f"python -m engine.settings.document {TARGETS} > docs/configuration.md"


def test_the_configuration_page_is_the_one_the_settings_generate() -> None:
    generated = document.document(CaptureSettings, TransferSettings, targets=TARGETS)
    assert PAGE.read_text() == generated, f"docs/configuration.md is out of date: run {REGENERATE}"
    assert REGENERATE in generated  # the page says how it is made


def test_the_page_names_every_setting_with_its_variable() -> None:
    page = PAGE.read_text()
    for cls in (Settings, CaptureSettings, TransferSettings):
        for name, field in cls.model_fields.items():
            assert f"`{document.field_variables(name, field)[0]}`" in page, name
    assert "`POKESAGA_STATUS_DB_URL`" in page and "`POKESAGA_DATABASES__<SERVICE>`" in page


def test_a_setting_without_a_description_is_refused() -> None:
    from pydantic import Field

    class Undocumented(Settings):
        mystery: int = Field(default=1)

    with pytest.raises(ValueError, match="setting mystery has no description"):
        document.document(Undocumented)


def test_the_module_writes_the_page(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.settings.document", *TARGETS.split()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(Path.home())},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == PAGE.read_text()
