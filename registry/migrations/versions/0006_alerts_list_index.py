"""The API's alert list: an index on (community_id, id), the list's filter and order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the index."""
    op.create_index("ix_alerts_community_id_id", "alerts", ["community_id", "id"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_alerts_community_id_id", table_name="alerts")
