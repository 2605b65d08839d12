"""toy: topic ids on positions, row ids never reused, parked heads found by when they are due

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from engine.store.migrations import messaging_v4

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_v4.upgrade()


def downgrade() -> None:
    messaging_v4.downgrade()
