"""status: nothing of its own (was: the engine's identities that never start over)

Revision ID: 0004
Revises: 0003

Before the engine kept its own history, this revision changed the engine's tables; the
engine's revision engine_0004 does it now (engine.store.migrate). Kept, with no body, so that
a database at this revision stands where it stood, and an older pokesaga deployed again finds
the revision it knows.
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
