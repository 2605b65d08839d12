"""deposits: nothing of its own (was: positions per partition, and an inbox that keeps ids for a window)

Revision ID: 0003
Revises: 0002

Before the engine kept its own history, this revision changed the engine's tables; the
engine's revision engine_0003 does it now (engine.store.migrate). Kept, with no body, so that
a database at this revision stands where it stood, and an older pokesaga deployed again finds
the revision it knows.
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
