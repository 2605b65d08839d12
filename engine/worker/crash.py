"""Named crash points of the participant loop (``POKESAGA_CRASH_AT``), off by default.

Tests set one to prove that a hard crash in that window loses and duplicates nothing.
"""

from __future__ import annotations

import logging
import os

AFTER_LOCAL_COMMIT = "after-local-commit"  # state committed, nothing published
AFTER_PUBLISH = "after-publish"  # published, outbox rows not yet marked sent
AFTER_MARK_SENT = "after-mark-sent"  # marked sent, offsets not yet committed
POINTS = (AFTER_LOCAL_COMMIT, AFTER_PUBLISH, AFTER_MARK_SENT)

log = logging.getLogger(__name__)


def check(configured: str | None, point: str) -> None:
    """Kill this process at once, no clean-up, if ``point`` is the configured crash point."""
    if configured == point:
        log.critical("crash point %s reached: exiting hard", point)
        os._exit(137)
