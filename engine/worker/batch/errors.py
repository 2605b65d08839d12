"""What can interrupt a batch, and who is at fault: a leaf module, imported by the rest of the batch.

The database or broker being unavailable rolls the whole batch back and it is tried again
(``is_unavailable``); a record's own error sends the batch down the ladder (``Careful``);
``Unverified`` and ``StartedOver`` are questions for the loop, which owns the consumer; a step
that cannot be done at all ``GaveUp`` and takes its failure path.
"""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from engine.wire.text import printable
from engine.worker.rebuild import RebuildRequired

__all__ = [
    "Careful",
    "GaveUp",
    "Interrupted",
    "RebuildRequired",
    "StartedOver",
    "TooLarge",
    "Unverified",
    "describe",
    "gave_up",
    "is_unavailable",
]

# The reasons of a step that could not be done at all; a rebuild gives up again with them.
GAVE_UP = ("retries_exhausted", "non_retryable_error", "event_too_large", "deadline_exceeded")


def is_unavailable(error: BaseException) -> bool:
    """The database itself, not the record: retry the batch, acknowledge nothing."""
    if isinstance(error, OperationalError | InterfaceError | DisconnectionError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


class Careful(Exception):
    """An error that is a record's, in the optimistic pass: apply the batch record by record."""

    def __init__(self, event_id: str | None, error: Exception) -> None:
        super().__init__(event_id)
        self.event_id = event_id
        self.error = error


class Unverified(Exception):
    """A record read from the broker sits below its partition's position, and its topic's id was
    not read since the record was fetched: was the topic made again? Read the ids, then apply."""

    def __init__(self, topics: set[str]) -> None:
        super().__init__(", ".join(sorted(topics)))
        self.topics = topics


class StartedOver(Exception):
    """Partitions whose topic was made again since their position was recorded (another topic id):
    they must be read again from their beginning (nothing of the batch was applied)."""

    def __init__(self, partitions: dict[tuple[str, int], str]) -> None:
        super().__init__(", ".join(f"{t}[{p}]" for t, p in sorted(partitions)))
        self.partitions = partitions  # (topic, partition) -> the topic's id now


class Interrupted(Exception):
    """A stop was requested while the batch waited for its database: it is abandoned, uncommitted."""


class TooLarge(Exception):
    """An event would exceed the largest record pokesaga publishes (``max_message_bytes``)."""


class GaveUp(Exception):
    """A step that will not be tried again: ``reason`` is one of ``GAVE_UP``."""

    def __init__(self, reason: str, detail: str, attempts: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.attempts = attempts


def gave_up(error: Exception, attempts: int | None, retryable: bool = False) -> GaveUp:
    """Why ``error`` ends the step after ``attempts``: too large, retries exhausted, or not retryable."""
    if isinstance(error, TooLarge):
        return GaveUp("event_too_large", str(error), attempts)
    tried = f" after {attempts} attempt{'s' * (attempts > 1)}" if attempts else ""
    return GaveUp("retries_exhausted" if retryable else "non_retryable_error", f"{describe(error)}{tried}", attempts)


def describe(error: BaseException) -> str:
    """``error`` in one bounded line: a validation error by its first field, anything else by its type."""
    if isinstance(error, ValidationError) and error.error_count():
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        said = f"{error.title}: {where}: {first['msg']}"
        return f"ValidationError: {printable(said, 300)}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {printable(text[0], 300)}" if text else type(error).__name__
