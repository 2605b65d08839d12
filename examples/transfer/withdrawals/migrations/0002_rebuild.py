"""withdrawals: nothing of its own (was: the engine's rebuild state and parked records)

Revision ID: 0002
Revises: 0001

Before the engine kept its own history, this revision changed the engine's tables; the
engine's revision engine_0002 does it now (engine.store.migrate). Kept, with no body, so that
a database at this revision stands where it stood, and an older pokesaga deployed again finds
the revision it knows.
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
