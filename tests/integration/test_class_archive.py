"""The local broker's class archive (engine.local.classdata), on the machine's real JDK and Kafka
jars: written once by a broker of its own, then mapped by every JVM; a JDK that cannot write one,
or an archive the JVM refuses, never keeps a broker from starting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from capture.settings import Settings
from engine.local import classdata
from engine.local.broker import LocalKafka

pytestmark = [
    pytest.mark.no_database,
    pytest.mark.skipif(
        shutil.which("java") is None or shutil.which("mvn") is None, reason="the local broker needs a JDK and Maven"
    ),
]
SAID = "archiving the Kafka classes"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache of its own, whose jars are the machine's (linked, not copied): its archive is the test's."""
    machine = LocalKafka(Settings().kafka_cache_dir)
    machine.ensure_jars()
    home = tmp_path / "cache" / machine.home.name
    home.mkdir(parents=True)
    (home / "lib").symlink_to(machine.lib)
    return home.parent


def started(cache: Path, state: Path) -> LocalKafka:
    """A broker started in ``state`` (answering, else the start raised), to be discarded."""
    local = LocalKafka(cache, state=state)
    local.start()
    return local


def test_the_first_broker_writes_the_class_archive_once_and_every_later_jvm_maps_it(
    cache: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    local = started(cache, tmp_path / "first")
    try:
        archive = classdata.archive(local.home, local.lib)
        assert archive is not None and archive.is_file()
        assert [p.name for p in local.home.glob("classes-*")] == [archive.name]  # the trial's folder is gone
        assert f"-XX:SharedArchiveFile={archive}" in Path(f"/proc/{local.pid()}/cmdline").read_text().split("\0")
    finally:
        local.discard()
    assert capfd.readouterr().err.count(SAID) == 1
    # Mapped, not only named: with -Xshare:on a JVM that cannot map the archive does not start.
    shown = subprocess.run(
        local._java("-Xshare:on", "-Xlog:class+load=info", "kafka.tools.StorageTool", "random-uuid"),
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stdout[-500:]
    assert re.search(r"org\.apache\.kafka\.\S+ source: shared objects file \(top\)", shown.stdout)
    LocalKafka(cache, state=tmp_path / "second").ensure_class_archive()
    assert SAID not in capfd.readouterr().err  # once per JDK and jars


def test_an_archive_the_jvm_refuses_costs_the_sharing_never_the_start(cache: Path, tmp_path: Path) -> None:
    home = cache / LocalKafka(cache).home.name
    archive = classdata.archive(home, home / "lib")
    assert archive is not None
    archive.write_bytes(b"not an archive\xff" * 1000)  # truncated, another JDK's, a disk that lied
    local = started(cache, tmp_path / "broker")
    local.discard()
    assert archive.read_bytes().startswith(b"not an archive")  # offered, refused by the JVM, left alone


def test_a_jdk_that_cannot_write_an_archive_is_said_once_and_its_brokers_start_without(
    cache: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a JDK with no base archive: it cannot dump one.
    monkeypatch.setenv("KAFKA_JVM_PERFORMANCE_OPTS", "-Xshare:off -XX:TieredStopAtLevel=1")
    local = started(cache, tmp_path / "first")
    local.discard()
    said = capfd.readouterr().err
    assert "no class archive: formatting the broker's storage failed: Error occurred during initialization" in said
    assert not any("SharedArchiveFile" in o for o in local._java())
    assert [p.suffix for p in local.home.glob("classes-*")] == [".none"]
    LocalKafka(cache, state=tmp_path / "second").ensure_class_archive()
    assert SAID not in capfd.readouterr().err  # not asked again


def test_another_jdk_or_jars_resolved_again_name_another_archive(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / ".complete").touch()
    first = classdata.archive(tmp_path, lib)
    assert first is not None and first.parent == tmp_path and first == classdata.archive(tmp_path, lib)
    stat = os.stat(lib / ".complete")
    os.utime(lib / ".complete", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert classdata.archive(tmp_path, lib) not in (None, first)
    assert classdata.options(tmp_path, lib) == []  # none written: none offered
    assert classdata.options(tmp_path, lib, writing=tmp_path / "x.jsa") == [
        f"-XX:ArchiveClassesAtExit={tmp_path}/x.jsa"
    ]
