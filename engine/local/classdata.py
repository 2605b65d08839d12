"""Class-data sharing for the local broker's JVMs (AppCDS, JEP 350).

A Kafka JVM spends most of its start loading and verifying some 5,000 classes. A dynamic archive
of them, written once by a broker that started and stopped cleanly (``-XX:ArchiveClassesAtExit``),
is mapped by every later JVM of the same JDK and jars (``-XX:SharedArchiveFile``): a broker then
starts on about half the CPU, the storage tool on two thirds. Apache Kafka's own image does the same.

The archive lives beside the jars, named after what it is bound to: the JDK (the real path, size
and time of its ``java``) and the jars (when they were resolved). Another JDK or the jars resolved
again name another archive, so a stale one is never offered; one the JVM refuses anyway (it checks
its own build and the class path) only costs the sharing, never the start (``-Xshare:auto``). A JDK
that cannot write one (no base archive) is remembered by a ``.none`` file of the same name. A new
archive replaces the others (another JDK's, or jars resolved before): each is some 50 MB.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def archive(home: Path, lib: Path) -> Path | None:
    """The archive for this JDK and these jars (it may not exist yet), or None with no ``java``."""
    java = shutil.which("java")
    if java is None:
        return None
    real = os.path.realpath(java)
    try:
        jdk, jars = os.stat(real), os.stat(lib / ".complete")
    except OSError:
        return None
    bound = f"{real}:{jdk.st_size}:{jdk.st_mtime_ns}:{jars.st_mtime_ns}"
    return home / f"classes-{hashlib.sha256(bound.encode()).hexdigest()[:16]}.jsa"


def options(home: Path, lib: Path, writing: Path | None = None) -> list[str]:
    """The JVM options: write the archive to ``writing`` at exit, else map the archive if there is one."""
    if writing is not None:
        return [f"-XX:ArchiveClassesAtExit={writing}"]
    found = archive(home, lib)
    return [f"-XX:SharedArchiveFile={found}"] if found is not None and found.is_file() else []


@contextlib.contextmanager
def writing(home: Path, lib: Path) -> Iterator[Path | None]:
    """Where a JVM that starts and stops cleanly in the block should write the archive, under the
    cache's lock (one writer); None when there is nothing to write. What it wrote is moved into
    place after the block; nothing written marks this JDK as unable to."""
    target = archive(home, lib)
    if target is None or target.exists() or target.with_suffix(".none").exists():
        yield None
        return
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() or target.with_suffix(".none").exists():
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="classes-", dir=home) as scratch:
            dump = Path(scratch) / "classes.jsa"
            yield dump
            for stale in [*home.glob("classes-*.jsa"), *home.glob("classes-*.none")]:
                stale.unlink(missing_ok=True)  # another JDK's, or jars resolved before
            if dump.is_file() and dump.stat().st_size > 0:
                os.replace(dump, target)
            else:
                target.with_suffix(".none").touch()
