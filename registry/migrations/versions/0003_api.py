"""API: users and the grids they serve, API keys, commands (their audit trail).

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is a frozen snapshot: it spells out its types instead of importing the models.
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _fk(table: str, column: str, target: str) -> sa.ForeignKey:
    return sa.ForeignKey(f"{target}.id", name=f"fk_{table}_{column}_{target}", ondelete="CASCADE")


def _ms(name: str, *, nullable: bool = False) -> sa.Column[int]:
    """A time in ms since the epoch."""
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    """Create the API's tables."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("full_name", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column(
            "community_id",
            sa.String(32),
            _fk("users", "community_id", "communities"),
            nullable=True,
        ),
        sa.Column("password_hash", sa.String(256), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ms("created_ms"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.CheckConstraint(
            "role IN ('admin', 'operator', 'grid_worker', 'viewer')", name="ck_users_role"
        ),
        sa.CheckConstraint(
            "role IN ('admin', 'viewer') OR community_id IS NOT NULL",
            name="ck_users_community_scoped",
        ),
    )
    op.create_index("ix_users_community_id", "users", ["community_id"])
    op.create_table(
        "user_grids",
        sa.Column("user_id", sa.Integer(), _fk("user_grids", "user_id", "users"), nullable=False),
        sa.Column("grid_id", sa.Integer(), _fk("user_grids", "grid_id", "grids"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "grid_id", name="pk_user_grids"),
    )
    op.create_index("ix_user_grids_grid_id", "user_grids", ["grid_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), _fk("api_keys", "user_id", "users"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        _ms("created_ms"),
        _ms("expires_ms", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "commands",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("community_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("args", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        _ms("created_ms"),
        _ms("expires_ms"),
        _ms("sent_ms", nullable=True),
        _ms("finished_ms", nullable=True),
        _ms("ack_ts", nullable=True),
        sa.Column("error", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
        sa.CheckConstraint(
            "status IN ('queued', 'sent', 'acknowledged', 'failed', 'expired')",
            name="ck_commands_status",
        ),
    )
    op.create_index("ix_commands_device_id_created_ms", "commands", ["device_id", "created_ms"])
    op.create_index(
        "ix_commands_community_id_created_ms", "commands", ["community_id", "created_ms"]
    )
    op.create_index("ix_commands_status_expires_ms", "commands", ["status", "expires_ms"])


def downgrade() -> None:
    """Drop the API's tables, dependents first."""
    for table in ("commands", "api_keys", "user_grids", "users"):
        op.drop_table(table)
