"""Imagery: patrol snapshots (files by SHA-256, detection, quality), their dead letters,
and each robot's camera state.

Revision ID: 0004
Revises: 0003
Create Date: 2025-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is a frozen snapshot: it spells out its types instead of importing the models.
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ms(name: str, *, nullable: bool = False) -> sa.Column[int]:
    """A time in ms since the epoch."""
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _optional(name: str, kind: sa.types.TypeEngine[Any]) -> sa.Column[Any]:
    return sa.Column(name, kind, nullable=True)


def _file(variant: str, *, sized: bool) -> list[sa.Column[Any]]:
    """A stored image: its hash and byte count, and for images we made, its pixel size."""
    columns = [
        _optional(f"{variant}_sha256", sa.String(64)),
        _optional(f"{variant}_bytes", sa.Integer()),
    ]
    if sized:
        columns += [
            _optional(f"{variant}_width", sa.Integer()),
            _optional(f"{variant}_height", sa.Integer()),
        ]
    return columns


def upgrade() -> None:
    """Create the imagery tables."""
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        _ms("at_ms"),
        _ms("received_ms", nullable=True),
        _ms("detection_ts", nullable=True),
        _optional("scene", sa.String(32)),
        _optional("confidence", sa.Float()),
        _optional("lat", sa.Float()),
        _optional("lon", sa.Float()),
        _optional("width", sa.Integer()),
        _optional("height", sa.Integer()),
        *_file("original", sized=False),
        *_file("privacy", sized=True),
        *_file("thumbnail", sized=True),
        _optional("faces", sa.Integer()),
        _optional("people", sa.Integer()),
        _optional("brightness", sa.Float()),
        _optional("sharpness", sa.Float()),
        _optional("entropy", sa.Float()),
        _optional("uniform", sa.Float()),
        _optional("dark", sa.Boolean()),
        _optional("blurred", sa.Boolean()),
        _optional("obstructed", sa.Boolean()),
        sa.Column("qr_codes", JSON_DOCUMENT, nullable=False),
        _optional("checkpoint_route", sa.String(32)),
        _optional("checkpoint_id", sa.String(64)),
        _optional("evidence", sa.String(16)),
        sa.PrimaryKeyConstraint("id", name="pk_snapshots"),
        sa.UniqueConstraint("device_id", "snapshot_id", name="uq_snapshots_device_id_snapshot_id"),
    )
    op.create_index("ix_snapshots_community_id_at_ms", "snapshots", ["community_id", "at_ms"])
    op.create_index("ix_snapshots_device_id_at_ms", "snapshots", ["device_id", "at_ms"])
    for variant in ("original", "privacy", "thumbnail"):
        op.create_index(f"ix_snapshots_{variant}_sha256", "snapshots", [f"{variant}_sha256"])
    op.create_table(
        "snapshot_rejections",
        sa.Column("id", sa.Integer(), nullable=False),
        _ms("received_ms"),
        _optional("community_id", sa.String(32)),
        _optional("device_id", sa.String(64)),
        _optional("snapshot_id", sa.String(64)),
        sa.Column("topic", sa.String(256), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(300), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_snapshot_rejections"),
    )
    op.create_index("ix_snapshot_rejections_received_ms", "snapshot_rejections", ["received_ms"])
    op.create_table(
        "robot_cameras",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("community_id", sa.String(32), nullable=False),
        sa.Column("bad_streak", sa.Integer(), nullable=False),
        sa.Column("bad_snapshots", JSON_DOCUMENT, nullable=False),
        sa.Column("fault", sa.Boolean(), nullable=False),
        _ms("fault_since_ms", nullable=True),
        _ms("last_ms"),
        sa.PrimaryKeyConstraint("device_id", name="pk_robot_cameras"),
    )


def downgrade() -> None:
    """Drop the imagery tables."""
    for table in ("robot_cameras", "snapshot_rejections", "snapshots"):
        op.drop_table(table)
