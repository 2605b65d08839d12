"""status: positions per partition, and an inbox that keeps ids for a window

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from engine.store.migrations import messaging_v3

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_v3.upgrade()


def downgrade() -> None:
    messaging_v3.downgrade()
