"""What the README and docs/*.md show can be run as shown: every command in a code block parses
(``pokesaga …`` by the CLI's own parser, never run; ``make X`` names a target of the Makefile;
``python -m X`` an importable module), and every relative link leads to a file and a heading."""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from capture.cli import build_parser
from engine.cli.common import Usage
from tests.support import FENCE, ROOT, doc_section, documentation, headings

pytestmark = pytest.mark.no_database

# Code blocks in these languages hold no shell commands.
NOT_SHELL = {"json", "python", "mermaid", "yaml", "toml"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"<[^<>]+>")  # <saga-id>, <pid of …>: a value the reader fills in
# An argparse error of a subcommand, as the CLI prints it: the command shown is meant to be refused.
REFUSED = re.compile(r"^pokesaga(?: [a-z-]+)+: ")
INSIDE = (re.compile(r"\$\((pokesaga [^)]*)\)"), re.compile(r"\brun --rm cli (pokesaga .*)$"))


@dataclass(frozen=True)
class Shown:
    """A command as a document shows it, and what the document says it prints first."""

    where: str
    command: str
    output: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.command}"


def code_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, language, lines) of every fenced code block."""
    blocks: list[tuple[int, str, list[str]]] = []
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            if current is None:
                current, start, language = [], number + 1, line.strip().strip("`~").strip()
            else:
                blocks.append((start, language, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def shown_commands() -> list[Shown]:
    found = []
    for path, text in documentation().items():
        for start, language, lines in code_blocks(text):
            if language in NOT_SHELL:
                continue
            # A block with prompts shows output after them: only its prompted lines are commands.
            prompted = any(line.strip().startswith("$ ") for line in lines)
            for offset, line in enumerate(lines):
                where, stripped = f"{path.relative_to(ROOT)}:{start + offset}", line.strip()
                if prompted and not stripped.startswith("$ "):
                    continue
                if stripped.startswith("$ "):
                    after = [rest for rest in lines[offset + 1 :] if rest.strip()]
                    output = after[0] if after and not after[0].startswith("$ ") else ""
                    found.append(Shown(where, stripped[2:], output))
                elif stripped.startswith(("pokesaga ", "make ", "python -m ")):
                    found.append(Shown(where, stripped))
                found += [Shown(where, inner[1]) for pattern in INSIDE if (inner := pattern.search(stripped))]
    return found


def words(command: str) -> list[str]:
    """The command's words, placeholders filled in, without the variables set before it or a
    trailing ``&``."""
    tokens = shlex.split(PLACEHOLDER.sub("placeholder", command), comments=True)
    while tokens and ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    return tokens[:-1] if tokens[-1:] == ["&"] else tokens


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def label(shown: Shown) -> str:
    return f"{shown.where} {' '.join(words(shown.command))}"


SHOWN = shown_commands()


def test_the_documents_show_commands_at_all() -> None:
    assert sum(words(s.command)[:1] == ["pokesaga"] for s in SHOWN) >= 30
    assert {"make demo", "make test"} <= {" ".join(words(s.command)) for s in SHOWN}


def test_the_readme_opens_with_make_demo_and_make_test() -> None:
    first = [s for s in SHOWN if s.where.startswith("README.md:")][:2]
    assert [words(s.command) for s in first] == [["make", "demo"], ["make", "test"]]


@pytest.mark.parametrize("shown", [s for s in SHOWN if words(s.command)[:1] == ["pokesaga"]], ids=label)
def test_every_pokesaga_command_shown_parses(shown: Shown) -> None:
    argv = words(shown.command)[1:]
    if REFUSED.match(shown.output):
        with pytest.raises(Usage) as refused:
            build_parser().parse_args(argv)
        assert str(refused.value) == shown.output.strip(), "the error shown is not the one the CLI gives"
        return
    try:
        build_parser().parse_args(argv)
    except (Usage, SystemExit) as exc:
        pytest.fail(f"{shown} does not parse: {exc}")


@pytest.mark.parametrize("shown", [s for s in SHOWN if words(s.command)[:1] == ["make"]], ids=label)
def test_every_make_command_shown_names_a_target(shown: Shown) -> None:
    targets = [word for word in words(shown.command)[1:] if not ASSIGNMENT.match(word) and not word.startswith("-")]
    assert targets and set(targets) <= make_targets(), f"{shown}: no such target in the Makefile"


def inline_commands(prefix: str) -> list[Shown]:
    """Commands in running text (`` `pokesaga start --wait` ``) written out in full: with a flag or
    an argument, and no placeholder (NAME, [--flag], …, a|b). A bare name (`` `pokesaga trace` ``)
    names a command, it does not run one."""
    found = []
    for path, text in documentation().items():
        for number, line in enumerate(text.splitlines(), 1):
            for span in re.findall(rf"`({re.escape(prefix)}[^`]+)`", line):
                invoked = " --" in span or len(span.split()) >= 4 or prefix != "pokesaga "
                if invoked and not re.search(r"[\[\]|…<>]|\b[A-Z][A-Z_]*\b", span):
                    found.append(Shown(f"{path.relative_to(ROOT)}:{number}", span))
    return found


@pytest.mark.parametrize("shown", inline_commands("pokesaga "), ids=label)
def test_every_pokesaga_command_written_in_the_text_parses(shown: Shown) -> None:
    try:
        build_parser().parse_args(words(shown.command)[1:])
    except (Usage, SystemExit) as exc:
        pytest.fail(f"{shown} does not parse: {exc}")


@pytest.mark.parametrize(
    "shown", [s for s in SHOWN + inline_commands("python -m ") if words(s.command)[:2] == ["python", "-m"]], ids=label
)
def test_every_python_module_shown_exists(shown: Shown) -> None:
    module = words(shown.command)[2]
    if module == "trip" and shown.where.startswith("docs/writing-a-saga.md"):
        return  # the saga that page writes: tests/e2e/test_writing_a_saga.py writes it and runs these
    assert importlib.util.find_spec(module) is not None, f"{shown}: no module {module}"


def test_the_readme_shows_the_transfer_declaration_as_it_is() -> None:
    """README's "Writing a saga" shows examples/transfer/saga.py whole (its docstring aside)."""
    declared = (ROOT / "examples" / "transfer" / "saga.py").read_text(encoding="utf-8")
    body = declared.split("from __future__ import annotations\n\n", 1)[1]
    blocks = [b for _, language, b in code_blocks(doc_section("Writing a saga")) if language == "python"]
    assert ["\n".join(b) + "\n" for b in blocks] == [body]


def slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", title).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(title) for _, _, title in headings(path.read_text(encoding="utf-8"))}


# Written on another branch at the same time as this one: its link is checked once it is here.
PENDING: set[Path] = set()


def test_every_relative_link_leads_to_a_file_and_a_heading_there() -> None:
    broken = []
    for path, text in documentation().items():
        outside_code = "\n".join(
            line for n, line in enumerate(text.splitlines()) if not any(n in r for r in code_ranges(text))
        )
        for target in re.findall(r"\]\(([^)\s]+)\)", outside_code):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if linked in PENDING and not linked.exists():
                continue
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def code_ranges(text: str) -> list[range]:
    """Line indexes (from 0) inside fenced code blocks, fences included."""
    ranges, opened = [], None
    for n, line in enumerate(text.splitlines()):
        if FENCE.match(line):
            if opened is None:
                opened = n
            else:
                ranges.append(range(opened, n + 1))
                opened = None
    return ranges
