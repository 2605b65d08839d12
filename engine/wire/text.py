"""Text taken from records, made safe to show and to store: one line, bounded, nothing that a
terminal would act on (control and bidirectional-override characters) and no NUL (which
PostgreSQL refuses), each escaped as Python would write it (``\\x00``, ``\\u202e``)."""

from __future__ import annotations

import re
import shlex

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with the characters above escaped, at most ``limit`` characters long, escapes and
    the ``…`` that says it was cut included (so it fits a column of that size)."""
    if limit is not None:
        text = text[: limit + 1]  # escaping only lengthens it
    shown = _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown


def saga_option(saga_id: str) -> str:
    """``--saga ID`` for a command line, one shell word however the id reads (``--saga=-x`` when it
    starts with a dash: argparse would take ``-x`` for an option)."""
    return f"--saga={shlex.quote(saga_id)}" if saga_id.startswith("-") else f"--saga {shlex.quote(saga_id)}"


def saga_argument(saga_id: str) -> str:
    """A saga id as a command's last argument (after ``--`` when it starts with a dash)."""
    return f"-- {shlex.quote(saga_id)}" if saga_id.startswith("-") else shlex.quote(saga_id)
