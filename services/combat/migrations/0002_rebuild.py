"""combat: the runtime's rebuild state and parked records

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from engine.store.migrations import messaging_v2

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_v2.create()


def downgrade() -> None:
    messaging_v2.drop()
