"""``pokesaga`` as it derived event ids before they included the saga id (issue 21), for the
upgrade test (tests/e2e/test_event_ids.py): this code, with a caused event's id derived the old
way, from its cause's id and its type alone (``legacy_caused_id``). Nothing else differs: what
the services published before the change is what this publishes.

``python -m tests.e2e.legacy_ids run SERVICE``, as ``pokesaga run SERVICE``.
"""

from __future__ import annotations

import sys

from engine.wire import envelope


def derived_before(saga_id: str, cause_id: str, kind: str, *more: str) -> str:
    """What ``engine.wire.envelope.wrap`` gave a caused event before: no saga id in it."""
    return envelope.derive_id(cause_id, kind, *more)


def main() -> int:
    envelope.caused_id = derived_before  # wrap() looks it up when it derives an id
    from capture.cli import main as pokesaga

    return pokesaga()


if __name__ == "__main__":
    sys.exit(main())
