"""The image holds what runs, shown without a Docker engine.

The project is installed exactly as the ``Dockerfile`` installs it. Its instructions are read,
not restated here: the build context is filtered by ``.dockerignore`` with Docker's pattern rules
(moby/patternmatcher, ``**`` included), each ``COPY`` copies from it into a folder that stands
for the image's filesystem, each ``RUN`` step runs (``pip install`` in a new virtualenv with no
system site-packages, standing for the image's Python; ``rm`` removes the source folder as the
image does), and an instruction or a step this module cannot reproduce fails it, by name.

Then every command ``docker-compose.yml`` runs on that image runs from the image's working
directory, with the container's environment: each long-running one (the services, the
tracker) until it serves, passes its health checks (compose's, and the image's
``HEALTHCHECK`` where it serves ``/health/live``) and, while they all run, the README's
``docker compose run --rm cli pokesaga …`` examples exit 0; then SIGTERM, and each exits 0.
Each one-shot command (the ``cli`` profile's, the image's ``CMD``) runs to exit 0.

What this machine stands in for: the session's broker for the compose broker, SQLite files in
the image's data folder for PostgreSQL (each compose database URL's driver is checked
importable in the image), a free port for each container port (a health check that probes a
literal port is pointed at its stand-in). What is not reproduced: the base image's operating
system, its user (commands run as this one), and ``PIP_NO_CACHE_DIR``: pip's cache is kept, so
a second run downloads nothing (the installed files are the same).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from capture.settings import SERVICES
from devtools.broker import free_port

pytestmark = pytest.mark.no_database  # no service database of the tests: the image's own SQLite files

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
CONTAINERS: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: c for name, c in CONTAINERS.items() if "build" in c or str(c.get("image", "")).startswith("pokesaga")}
README = (ROOT / "README.md").read_text()

INSTALL_TIMEOUT = 900  # a cold pip cache downloads every dependency
SERVING_DEADLINE = 120.0  # a long-running command serves /health/live (the tracker: /metrics)
HEALTHY_DEADLINE = 120.0  # its health checks pass (ready: partitions assigned)
ONE_SHOT_TIMEOUT = 120.0
STOP_DEADLINE = 45.0
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


# --- .dockerignore, as Docker reads and matches it (moby/patternmatcher) ---------------------------


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` of a slash path."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


@dataclasses.dataclass(frozen=True)
class Pattern:
    """One ``.dockerignore`` pattern; ``exclusion``: a ``!`` line, which keeps what it matches."""

    text: str
    exclusion: bool
    kind: str  # exact, prefix ("dir/**"), suffix ("**/name"), regexp
    regexp: re.Pattern[str] | None

    @classmethod
    def parse(cls, text: str, exclusion: bool) -> Pattern:
        kind, source = "exact", "^"
        at = count = 0
        while at < len(text):
            ch = text[at]
            at += 1
            if ch == "*" and text[at : at + 1] == "*":
                at += 1
                if text[at : at + 1] == "/":  # "**/" is "**"
                    at += 1
                if at == len(text):  # "**" at the end: anything below
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        source, kind = source + ".*", "regexp"
                else:  # any number of folders, none included
                    source, kind = source + "(.*/)?", "regexp"
                if count == 0:
                    kind = "suffix"
            elif ch == "*":
                source, kind = source + "[^/]*", "regexp"
            elif ch == "?":
                source, kind = source + "[^/]", "regexp"
            elif ch in ".+()|{}$":
                source += "\\" + ch
            elif ch == "\\" and at < len(text):
                source, kind = source + "\\" + text[at], "regexp"
                at += 1
            elif ch == "\\":
                source += "\\\\"
            elif ch in "[]":
                source, kind = source + ch, "regexp"
            else:
                source += ch
            count += 1
        try:
            compiled = re.compile(source + r"\Z") if kind == "regexp" else None
        except re.error as exc:
            raise ValueError(f".dockerignore: bad pattern {text!r}: {exc}") from None
        return cls(text, exclusion, kind, compiled)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regexp is not None
        return self.regexp.match(path) is not None


class DockerIgnore:
    """The patterns of a ``.dockerignore`` file, read as Docker's ``ignorefile.ReadAll`` reads them."""

    def __init__(self, text: str) -> None:
        self.patterns: list[Pattern] = []
        for line in text.removeprefix("\ufeff").splitlines():
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
                if not line:
                    raise ValueError('.dockerignore: illegal exclusion pattern: "!"')
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
            self.patterns.append(Pattern.parse(line, exclusion))

    @property
    def exceptions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """``path`` (a slash path in the context) is left out: the last pattern matching it, or
        one of its parent folders, decides (``MatchesOrParentMatches``)."""
        matched = False
        parent = posixpath.dirname(path) or "."
        parents = parent.split("/")
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit and parent != ".":
                hit = any(pattern.match("/".join(parents[: i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pattern.exclusion
        return matched


def context_files(context: Path, ignore: DockerIgnore) -> list[str]:
    """The build context as Docker sends it: every file (and symbolic link) kept, as slash paths."""
    kept: list[str] = []
    for folder, dirs, files in os.walk(context):
        here = Path(folder).relative_to(context).as_posix()

        def inside(name: str, here: str = here) -> str:
            return name if here == "." else f"{here}/{name}"

        if not ignore.exceptions:  # no "!" pattern can bring back what is below an excluded folder
            dirs[:] = [d for d in dirs if not ignore.excluded(inside(d))]
        links = [d for d in dirs if (Path(folder) / d).is_symlink()]
        kept += [inside(f) for f in [*files, *links] if not ignore.excluded(inside(f))]
    return sorted(kept)


# --- the Dockerfile, reproduced -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int

    def __str__(self) -> str:
        return f"Dockerfile line {self.line}: {self.keyword} {self.arguments}"


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions: comment lines dropped, continued lines (a trailing ``\\``) joined."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or not line.strip():
            continue  # a comment or an empty line, even between continued lines, as Docker reads them
        if not pending:
            start = number
        continued = re.search(r"\\[ \t]*$", line)
        pending.append(line[: continued.start()] if continued else line)
        if not continued:
            keyword, _, arguments = "".join(pending).strip().partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, f"Dockerfile line {start}: a continued line with nothing after it"
    return found


def exec_form(arguments: str) -> list[str]:
    """``["a", "b"]`` as is; anything else is run by the shell, as Docker runs a shell form."""
    if arguments.startswith("["):
        words = json.loads(arguments)
        assert isinstance(words, list) and all(isinstance(w, str) for w in words), arguments
        return words
    return ["/bin/sh", "-c", arguments]


def shell_steps(script: str, where: Instruction) -> list[list[str]]:
    """A ``RUN`` shell script as its commands; only ``a && b && …`` is reproduced."""
    if "$" in script or "`" in script:
        pytest.fail(f"{where}: shell expansion is not reproduced by this test; keep RUN to plain commands")
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    steps: list[list[str]] = [[]]
    for token in lexer:
        if token == "&&":
            steps.append([])
        elif token and set(token) <= set("();<>|&"):
            pytest.fail(f"{where}: {token!r}: only commands joined by && are reproduced by this test")
        else:
            steps[-1].append(token)
    return [s for s in steps if s]


@dataclasses.dataclass
class Image:
    """The image, reproduced: ``root`` stands for its filesystem, ``venv`` for its Python."""

    root: Path
    venv: Path
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # ENV, as the Dockerfile writes it
    workdir: str = "/"
    user: str = "root"
    homes: dict[str, str] = dataclasses.field(default_factory=lambda: {"root": "/root"})
    context: list[str] = dataclasses.field(default_factory=list)  # what COPY took from the context
    python_version: str | None = None
    base: str = ""  # FROM's image
    reports: list[Path] = dataclasses.field(default_factory=list)  # what each pip install installed, and whence
    entrypoint: list[str] = dataclasses.field(default_factory=list)
    cmd: list[str] = dataclasses.field(default_factory=list)
    healthcheck: list[str] | None = None

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def inside(self, path: str) -> Path:
        """The path ``path`` of the image (relative: to the working directory), on this machine."""
        absolute = go_clean(posixpath.join(self.workdir, path))
        mapped = self.root / absolute.lstrip("/")
        assert mapped == self.root or self.root in mapped.parents, f"{path} is outside the image"
        return mapped

    @property
    def cwd(self) -> Path:
        return self.inside(self.workdir)

    @property
    def home(self) -> Path:
        return self.inside(self.homes.get(self.user, f"/home/{self.user}"))

    def runtime_env(self) -> dict[str, str]:
        """What a process of the image sees: its ENV (paths mapped into ``root``), its Python first on PATH."""
        env = {"PATH": f"{self.venv / 'bin'}:{BASE_PATH}", "HOME": str(self.home), "LANG": "C.UTF-8"}
        for key, value in self.env.items():
            if key == "PATH":
                pytest.fail("Dockerfile: ENV PATH is not reproduced by this test")
            env[key] = str(self.inside(value)) if value.startswith("/") else value
        return env

    # The instructions.

    @classmethod
    def build(cls, dockerfile: str, context: Path, where: Path) -> Image:
        image = cls(root=where / "rootfs", venv=where / "python")
        image.root.mkdir(parents=True)
        ignore = DockerIgnore((context / ".dockerignore").read_text() if (context / ".dockerignore").exists() else "")
        files = context_files(context, ignore)
        steps = instructions(dockerfile)
        assert steps and steps[0].keyword == "FROM", "Dockerfile: the first instruction is not FROM"
        for step in steps:
            if step.keyword in ("ENV", "WORKDIR", "COPY", "USER") and "$" in step.arguments:
                pytest.fail(f"{step}: variable substitution is not reproduced by this test")
            handler = getattr(image, f"do_{step.keyword.lower()}", None)
            if handler is None:
                pytest.fail(
                    f"{step}: an instruction this test does not reproduce; teach it, or keep the Dockerfile simple"
                )
            handler(step, context, files)
        assert image.python_version is not None
        image.home.mkdir(parents=True, exist_ok=True)
        return image

    def do_from(self, step: Instruction, context: Path, files: list[str]) -> None:
        if self.python_version is not None:
            pytest.fail(f"{step}: a multi-stage build is not reproduced by this test")
        found = re.fullmatch(
            r"(?:--platform=\S+\s+)?(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)\S*(?:\s+AS\s+\S+)?",
            step.arguments,
            re.I,
        )
        if found is None:
            pytest.fail(f"{step}: only an official python:X.Y base image is reproduced by this test")
        self.python_version, self.base = found[1], step.arguments
        if f"{sys.version_info.major}.{sys.version_info.minor}" == found[1]:
            base = sys.executable
        else:
            other = shutil.which(f"python{found[1]}")
            if other is None:
                pytest.fail(f"{step}: the image runs Python {found[1]}; no python{found[1]} here to reproduce it")
            base = other
        made = subprocess.run(
            [base, "-m", "venv", str(self.venv)], capture_output=True, text=True, env=clean(os.environ)
        )
        assert made.returncode == 0, made.stderr
        config = (self.venv / "pyvenv.cfg").read_text()
        assert re.search(r"^include-system-site-packages = false$", config, re.M), config

    def do_env(self, step: Instruction, context: Path, files: list[str]) -> None:
        words = shlex.split(step.arguments)
        if words and "=" not in words[0]:  # ENV KEY value, the old form
            key, _, value = step.arguments.partition(" ")
            self.env[key] = value.strip()
            return
        for word in words:
            key, equals, value = word.partition("=")
            assert equals, f"{step}: {word!r} is not KEY=value"
            self.env[key] = value

    def do_workdir(self, step: Instruction, context: Path, files: list[str]) -> None:
        self.workdir = go_clean(posixpath.join(self.workdir, step.arguments))
        self.cwd.mkdir(parents=True, exist_ok=True)

    def do_user(self, step: Instruction, context: Path, files: list[str]) -> None:
        self.user = step.arguments.split(":")[0]

    def do_copy(self, step: Instruction, context: Path, files: list[str]) -> None:
        words = json.loads(step.arguments) if step.arguments.startswith("[") else shlex.split(step.arguments)
        for flag in [w for w in words if w.startswith("--")]:
            if not flag.startswith(("--chown", "--chmod", "--link")):  # ownership and layers: not reproduced
                pytest.fail(f"{step}: {flag} is not reproduced by this test")
        *sources, dest = [w for w in words if not w.startswith("--")]
        assert sources, f"{step}: nothing to copy"
        target = self.inside(dest)
        into_folder = dest.endswith("/") or len(sources) > 1
        for source in sources:
            if any(c in source for c in "*?["):
                pytest.fail(f"{step}: wildcards in COPY are not reproduced by this test")
            src = go_clean(source).lstrip("/") or "."
            if src == ".." or src.startswith("../"):
                pytest.fail(f"{step}: {source} is outside the build context")
            if src in files:  # a file
                chosen = {src: target / posixpath.basename(src) if into_folder or target.is_dir() else target}
            else:  # a folder: what is in it, into dest
                below = files if src == "." else [f for f in files if f.startswith(src + "/")]
                chosen = {f: target / (f if src == "." else f[len(src) + 1 :]) for f in below}
            if not chosen:
                pytest.fail(f"{step}: {source} is not in the build context (once .dockerignore has filtered it)")
            for path, copied in chosen.items():
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context / path, copied, follow_symlinks=False)
                self.context.append(path)

    def do_run(self, step: Instruction, context: Path, files: list[str]) -> None:
        commands = [exec_form(step.arguments)] if step.arguments.startswith("[") else shell_steps(step.arguments, step)
        for argv in commands:
            program = posixpath.basename(argv[0])
            if program in ("pip", "pip3"):
                self.pip(step, argv[1:])
            elif re.fullmatch(r"python[\d.]*", program) and argv[1:3] == ["-m", "pip"]:
                self.pip(step, argv[3:])
            elif program == "rm":
                self.remove(step, argv[1:])
            elif program in ("useradd", "adduser"):
                self.add_user(argv[1:])
            else:
                pytest.fail(f"{step}: {shlex.join(argv)}: a command this test does not reproduce")

    def do_expose(self, step: Instruction, context: Path, files: list[str]) -> None:
        pass  # ports are the settings' (test_compose checks EXPOSE against them)

    do_label = do_expose

    def do_healthcheck(self, step: Instruction, context: Path, files: list[str]) -> None:
        found = re.fullmatch(r"((?:--\S+\s+)*)(CMD|NONE)\s*(.*)", step.arguments, re.S)
        assert found is not None, f"{step}: not HEALTHCHECK [OPTIONS] CMD …"
        self.healthcheck = None if found[2] == "NONE" else exec_form(found[3])

    def do_cmd(self, step: Instruction, context: Path, files: list[str]) -> None:
        self.cmd = exec_form(step.arguments)

    def do_entrypoint(self, step: Instruction, context: Path, files: list[str]) -> None:
        self.entrypoint = exec_form(step.arguments)
        self.cmd = []  # as Docker: a new entrypoint drops the CMD set before it

    # The commands RUN may use.

    def pip(self, step: Instruction, args: list[str]) -> None:
        env = clean(os.environ) | {k: v for k, v in self.runtime_env().items() if k != "HOME"}
        env["PATH"] = f"{self.venv / 'bin'}:{BASE_PATH}"
        env.pop("PIP_NO_CACHE_DIR", None)  # pip's cache kept: a second run downloads nothing
        mapped = [str(self.inside(a)) if a.startswith("/") else a for a in args]
        if mapped[:1] == ["install"]:  # the same install, which also says what it took from where
            self.reports.append(self.venv.parent / f"pip-report-{len(self.reports)}.json")
            mapped[1:1] = ["--report", str(self.reports[-1])]
        done = subprocess.run(
            [str(self.python), "-m", "pip", *mapped],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        assert done.returncode == 0, (
            f"{step}: pip {shlex.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )

    def remove(self, step: Instruction, args: list[str]) -> None:
        flags = "".join(a.lstrip("-") for a in args if a.startswith("-") and not a.startswith("--"))
        long = [a for a in args if a.startswith("--")]
        recursive = "r" in flags or "R" in flags or "--recursive" in long
        for path in [a for a in args if not a.startswith("-")]:
            target = self.inside(path)
            if target.is_dir() and not target.is_symlink():
                assert recursive, f"{step}: rm {path}: a folder, and no -r"
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            else:
                assert "f" in flags or "--force" in long, f"{step}: rm {path}: no such file"

    def add_user(self, args: list[str]) -> None:
        name = args[-1]
        home = f"/home/{name}"
        for i, arg in enumerate(args[:-1]):
            if arg in ("-d", "--home-dir"):
                home = args[i + 1]
        if "-m" in args or "--create-home" in args:
            self.inside(home).mkdir(parents=True, exist_ok=True)
        self.homes[name] = home


def clean(environ: Mapping[str, str]) -> dict[str, str]:
    """This environment less what would let a child see the checkout or the test's settings."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    return {k: v for k, v in environ.items() if k not in dropped and not k.startswith(("POKESAGA_", "KAFKA_"))}


# --- the containers, as compose runs them on the image ------------------------------------------


def command_of(image: Image, container: dict[str, Any]) -> list[str]:
    """What compose runs: its entrypoint (else the image's) and its command (else the image's CMD)."""

    def words(value: Any) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    if "entrypoint" in container:
        return [*words(container["entrypoint"]), *words(container.get("command") or [])]
    command = container.get("command")
    return [*image.entrypoint, *(words(command) if command is not None else image.cmd)]


def healthcheck_of(image: Image, container: dict[str, Any]) -> list[str] | None:
    """The health check compose runs in the container: its own, else the image's."""
    check = container.get("healthcheck")
    if check is None:
        return image.healthcheck
    if check.get("disable"):
        return None
    test = check["test"]
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    assert test[0] == "CMD", f"healthcheck test {test!r}"
    return list(test[1:])


def database_urls(container: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in environment_of(container).items() if re.fullmatch(r"POKESAGA_\w+_DB_URL", k)}


def environment_of(container: dict[str, Any]) -> dict[str, Any]:
    given = container.get("environment") or {}
    return dict(item.split("=", 1) for item in given) if isinstance(given, list) else dict(given)


@dataclasses.dataclass
class Container:
    """A compose container's command on the image, with its environment stood in for here."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, str]  # a port the container serves on → its stand-in here
    healthcheck: list[str] | None
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def of(cls, image: Image, name: str, bootstrap: str, logs: Path) -> Container:
        """Compose's container ``name``; ``image``: the image run bare (``docker run pokesaga``)."""
        container = {} if name == "image" else OURS[name]
        env = image.runtime_env() | {k: str(v) for k, v in environment_of(container).items()}
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        for key in database_urls(container):  # PostgreSQL: the image's SQLite files stand in
            del env[key]
        ports: dict[str, str] = {}
        for key in [k for k in env if k.endswith("_PORT")]:
            here = str(free_port())
            ports[env[key]] = here
            env[key] = here
        elsewhere = {k: v for k, v in env.items() if any(re.search(rf"\b{re.escape(c)}:\d+", v) for c in CONTAINERS)}
        assert not elsewhere, f"{name}: no stand-in here for what these point at: {elsewhere}"
        check = healthcheck_of(image, container)
        check = None if check is None else cls.pointed(name, check, ports)
        return cls(name, command_of(image, container), env, ports, check, logs / f"{name}.log")

    @staticmethod
    def pointed(name: str, argv: list[str], ports: dict[str, str]) -> list[str]:
        """A health check probing a literal port of the container, pointed at its stand-in here."""

        def swap(found: re.Match[str]) -> str:
            assert found[2] in ports, f"{name}: its health check probes port {found[2]}, which no setting serves on"
            return f"{found[1]}:{ports[found[2]]}"

        return [re.sub(r"(127\.0\.0\.1|localhost):(\d+)", swap, arg) for arg in argv]

    def run(
        self, image: Image, argv: list[str] | None = None, timeout: float = ONE_SHOT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` (else its command) in the container, to completion."""
        return subprocess.run(
            argv or self.argv,
            cwd=image.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, image: Image) -> Container:
        program = shutil.which(self.argv[0], path=self.env["PATH"])
        assert program is not None, f"{self.name}: {self.argv[0]} is not on the image's PATH"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [program, *self.argv[1:]],
                cwd=image.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def passes(self, image: Image, check: list[str]) -> bool:
        """One run of a health check: it exits 0 within its time (Docker's: 3s; here more, on a busy CI)."""
        try:
            return self.run(image, check, timeout=30).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def serving(self) -> bool:
        """Its /health/live (the tracker: its /metrics) answers 200 on one of its ports."""
        return any(status(port, path) == 200 for port in self.ports.values() for path in ("/health/live", "/metrics"))


def status(port: str, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code
    except OSError:
        return 0


def until(check: Callable[[], bool], deadline: float, what: str, running: list[Container]) -> None:
    """Poll ``check`` until it holds; fail after ``deadline`` seconds, or as soon as a container exits."""
    end = time.monotonic() + deadline
    while not check():
        for container in running:
            if not container.alive:
                code = container.proc.returncode if container.proc else None
                pytest.fail(f"{container.name} exited ({code}) waiting for {what}:\n{container.tail()}")
        if time.monotonic() > end:
            logs = "\n".join(f"--- {c.name}\n{c.tail()}" for c in running)
            pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}\n{logs}")
        time.sleep(0.25)


def readme_cli_examples() -> list[list[str]]:
    """The README's ``docker compose run --rm cli pokesaga …`` commands (``… cli pokesaga …`` too)."""
    section = README.split("## Running as containers", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^docker compose run --rm cli (pokesaga[^#\n]*)", section, re.M)
    found += re.findall(r"`(?:docker compose run --rm|…) cli (pokesaga[^`]*)`", section)
    commands = dict.fromkeys(" ".join(f.split()) for f in found if "…" not in f)  # "pokesaga …": any command
    return [shlex.split(command) for command in commands]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The project installed as the Dockerfile installs it (once for the module)."""
    return Image.build((ROOT / "Dockerfile").read_text(), ROOT, tmp_path_factory.mktemp("image"))


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path / "logs"


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("**/__pycache__", "__pycache__/x.pyc", True),  # "**/" matches no folder too
        ("**/__pycache__", "engine/store/migrations/__pycache__/env.cpython-311.pyc", True),
        ("**/__pycache__", "engine/pycache.py", False),
        ("**/*.pyc", "a/b/c.pyc", True),
        ("**/*.pyc", "c.pyc", True),
        ("*.egg-info", "pokesaga.egg-info/PKG-INFO", True),  # a folder's pattern leaves out what it holds
        ("*.egg-info", "services/x.egg-info/PKG-INFO", False),  # "*" stops at a "/"
        ("tests", "tests/unit/test_x.py", True),
        ("tests", "services/tests/x.py", False),  # a pattern is anchored at the context's root
        ("/build", "build/lib/x.py", True),
        ("build", "engine/build.py", False),
        ("docs/**", "docs/a/b.md", True),
        ("a/*/c", "a/b/c/d", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("# a comment\n\n *.md \n!README*.md", "README.md", False),  # the last pattern matching decides
        ("*.md\n!README*.md", "CHANGES.md", True),
        ("docs\n!docs/keep.md", "docs/keep.md", False),
    ],
)
def test_the_context_is_filtered_as_docker_filters_it(patterns: str, path: str, excluded: bool) -> None:
    assert DockerIgnore(patterns).excluded(path) is excluded


def test_the_dockerfile_steps_are_read_as_docker_reads_them() -> None:
    steps = instructions('FROM python:3.11-slim\n# note\nRUN a \\\n    # inside\n    && b\nCMD ["x", "--y"]\n')
    assert [(s.keyword, s.arguments) for s in steps] == [
        ("FROM", "python:3.11-slim"),
        ("RUN", "a     && b"),
        ("CMD", '["x", "--y"]'),
    ]
    assert shell_steps("pip install '.[postgres]' && rm -rf /src", steps[1]) == [
        ["pip", "install", ".[postgres]"],
        ["rm", "-rf", "/src"],
    ]
    assert exec_form('["x", "--y"]') == ["x", "--y"] and exec_form("x --y") == ["/bin/sh", "-c", "x --y"]


def in_image(image: Image, code: str, *args: str) -> list[str]:
    """``python -c code args`` with the image's Python, from its working directory: its output's lines."""
    done = subprocess.run(
        [str(image.python), "-c", code, *args], cwd=image.cwd, env=image.runtime_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, f"{code} {shlex.join(args)}:\n{done.stderr[-3000:]}"
    return [line for line in done.stdout.splitlines() if line]


def test_the_image_holds_every_file_of_every_package_and_no_source(image: Image) -> None:
    sources = [p.relative_to(image.root).as_posix() for p in image.root.rglob("*.py")]
    assert sources == [], f"source files left in the image, outside its Python, to be imported by mistake: {sources}"
    name = PYPROJECT["project"]["name"]
    files = "import importlib.metadata as m, sys; print(*m.files(sys.argv[1]), sep=chr(10))"
    installed = set(in_image(image, files, name))
    # Every package pyproject installs from a checkout reaches the image (.dockerignore leaves none out)...
    packages = sorted({f.split("/")[0] for f in image.context if re.fullmatch(r"[^/]+/__init__\.py", f)})
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    declared = {
        folder.name
        for folder in ROOT.iterdir()
        if (folder / "__init__.py").exists()
        and any(fnmatch.fnmatchcase(folder.name, p) for p in find.get("include", ["*"]))
        and not any(fnmatch.fnmatchcase(folder.name, p) for p in find.get("exclude", []))
    }
    left_out = declared - set(packages)
    assert left_out == set(), f"packages pyproject installs that .dockerignore keeps from the image: {left_out}"
    scripts = {target.split(".")[0] for target in PYPROJECT["project"]["scripts"].values()}
    assert scripts <= set(packages), f"the console scripts' packages were not copied: {scripts - set(packages)}"
    # ... with every file of it: modules and package data alike (documentation aside).
    missing = [f for f in image.context if f.split("/")[0] in packages and not f.endswith(".md") and f not in installed]
    assert missing == [], f"copied into the image but not installed (pyproject's [tool.setuptools] tables): {missing}"
    migrations = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("services/*/migrations/*.py"))
    assert migrations, "no service migrations in the checkout"
    data = ["tracker/page.html", "engine/store/migrations/script.py.mako", *migrations]
    assert [f for f in data if f not in installed] == []
    # Imported from the image's Python, not from the checkout (gone) nor from the tests' environment.
    where = "import importlib, sys; print(*(importlib.import_module(n).__file__ for n in sys.argv[1:]), sep=chr(10))"
    outside = [f for f in in_image(image, where, *packages) if not Path(f).is_relative_to(image.venv)]
    assert outside == [], f"imported from outside the image's Python: {outside}"
    for script in PYPROJECT["project"]["scripts"]:
        assert (image.venv / "bin" / script).exists(), f"no {script} command in the image"


def test_every_database_url_compose_gives_has_its_driver_in_the_image(image: Image) -> None:
    urls = {url for container in OURS.values() for url in database_urls(container).values()}
    assert urls, "compose gives no database URL: this test checks nothing"
    for url in sorted(urls):  # create_engine imports the URL's driver
        in_image(image, "import sqlalchemy, sys; sqlalchemy.create_engine(sys.argv[1])", url)


def test_no_dependency_needs_a_compiler_the_slim_base_image_lacks(image: Image) -> None:
    """A dependency with no wheel here is built from its source: an extension module in it would
    need a C compiler, which a slim base image has not (the build would fail there, not here)."""
    assert image.reports, "the Dockerfile runs no pip install"
    if not re.search(r"-slim|alpine", image.base):
        pytest.skip(f"{image.base} has a compiler")
    items = [item for report in image.reports for item in json.loads(report.read_text())["install"]]
    built = sorted(
        item["metadata"]["name"]
        for item in items
        if "dir_info" not in item["download_info"] and not item["download_info"]["url"].endswith(".whl")
    )
    code = (
        "import importlib.metadata as m, sys\n"
        "print(*(n for n in sys.argv[1:] if any(f.suffix == '.so' for f in m.files(n) or [])), sep=chr(10))"
    )
    compiled = in_image(image, code, *built) if built else []
    assert compiled == [], f"built from source with a C compiler, which {image.base} has not: {compiled}"


def test_every_one_shot_command_runs_to_completion_in_the_image(image: Image, kafka_bootstrap: str, logs: Path) -> None:
    one_shot = [name for name, c in OURS.items() if str(c.get("restart", "no")) == "no"]
    assert "cli" in one_shot
    for name in ["image", *one_shot]:  # the image's own CMD, as `docker run pokesaga` runs it
        container = Container.of(image, name, kafka_bootstrap, logs)
        assert container.argv, f"{name}: no command"
        done = container.run(image)
        assert done.returncode == 0, f"{name}: {shlex.join(container.argv)} exited {done.returncode}:\n{done.stderr}"


def test_every_long_running_container_starts_in_the_image_is_healthy_serves_the_cli_and_stops_cleanly(
    image: Image, kafka_bootstrap: str, logs: Path
) -> None:
    names = [name for name, c in OURS.items() if str(c.get("restart", "no")) != "no"]
    assert {"tracker", *SERVICES} <= set(names), names
    running = [Container.of(image, name, kafka_bootstrap, logs) for name in names]
    try:
        for container in running:
            container.start(image)
        until(lambda: all(c.serving() for c in running), SERVING_DEADLINE, "every container to serve", running)

        checks: list[tuple[Container, list[str]]] = []
        for container in running:
            if container.healthcheck is not None:
                checks.append((container, container.healthcheck))
            live = any(status(port, "/health/live") == 200 for port in container.ports.values())
            if live and image.healthcheck is not None:  # the image's HEALTHCHECK probes /health/live
                checks.append((container, container.pointed(container.name, image.healthcheck, container.ports)))
        assert checks, "no health check to run"
        for container, check in checks:
            until(
                lambda container=container, check=check: container.passes(image, check),
                HEALTHY_DEADLINE,
                f"{container.name}'s health check {shlex.join(check)[:120]}",
                running,
            )

        # The README's `docker compose run --rm cli pokesaga …`, against these containers.
        examples = readme_cli_examples()
        assert any(argv[:2] == ["pokesaga", "start"] for argv in examples), examples
        cli = Container.of(image, "cli", kafka_bootstrap, logs)
        for argv in examples:
            done = cli.run(image, argv)
            assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        assert all(c.alive for c in running), {c.name: c.tail() for c in running if not c.alive}
    finally:
        for container in running:
            if container.alive and container.proc is not None:
                container.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + STOP_DEADLINE
        codes: dict[str, int | None] = {}
        for container in running:
            if container.proc is None:
                continue
            try:
                codes[container.name] = container.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                container.proc.kill()
                container.proc.wait()
                codes[container.name] = None
    stopped = {name: code for name, code in codes.items() if code != 0}
    assert stopped == {}, "did not stop cleanly on SIGTERM: " + "; ".join(
        f"{c.name} ({codes[c.name]}): {c.tail()}" for c in running if c.name in stopped
    )
