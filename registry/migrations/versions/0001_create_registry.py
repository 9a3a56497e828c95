"""Create the registry: communities, grids, workers, buildings, units, households, devices.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is a frozen snapshot: it spells out its types instead of importing the models.
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id() -> sa.Column[int]:
    """The integer surrogate key of a structure row."""
    return sa.Column("id", sa.Integer(), nullable=False)


def _owner(
    table: str, column: str, target: str, key_type: sa.types.TypeEngine[Any]
) -> sa.Column[Any]:
    """The non-null key to the owning row, deleted with it."""
    foreign_key = sa.ForeignKey(
        f"{target}.id", name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )
    return sa.Column(column, key_type, foreign_key, nullable=False)


def _reference(table: str, column: str, target: str, *, nullable: bool) -> sa.Column[int]:
    """A key to a row elsewhere in the community, which may not be deleted under it."""
    foreign_key = sa.ForeignKey(f"{target}.id", name=f"fk_{table}_{column}_{target}")
    return sa.Column(column, sa.Integer(), foreign_key, nullable=nullable)


def upgrade() -> None:
    """Create every registry table."""
    op.create_table(
        "communities",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("city", sa.String(64), nullable=True),
        sa.Column("district", sa.String(64), nullable=True),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("settings", JSON_DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_communities"),
    )
    op.create_table(
        "grids",
        _id(),
        _owner("grids", "community_id", "communities", sa.String(32)),
        sa.Column("slug", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grids"),
        sa.UniqueConstraint("community_id", "slug", name="uq_grids_community_id_slug"),
    )
    op.create_table(
        "grid_workers",
        _id(),
        _owner("grid_workers", "community_id", "communities", sa.String(32)),
        _reference("grid_workers", "grid_id", "grids", nullable=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("on_duty", sa.Boolean(), nullable=False),
        sa.Column("channels", JSON_DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grid_workers"),
        sa.UniqueConstraint("community_id", "phone", name="uq_grid_workers_community_id_phone"),
        sa.CheckConstraint("role IN ('grid_worker', 'manager')", name="ck_grid_workers_role"),
        sa.CheckConstraint(
            "role = 'manager' OR grid_id IS NOT NULL", name="ck_grid_workers_worker_has_grid"
        ),
    )
    op.create_index("ix_grid_workers_grid_id", "grid_workers", ["grid_id"])
    op.create_table(
        "buildings",
        _id(),
        _owner("buildings", "community_id", "communities", sa.String(32)),
        _reference("buildings", "grid_id", "grids", nullable=False),
        sa.Column("number", sa.String(16), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("floors", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_buildings"),
        sa.UniqueConstraint("community_id", "number", name="uq_buildings_community_id_number"),
    )
    op.create_index("ix_buildings_grid_id", "buildings", ["grid_id"])
    op.create_table(
        "units",
        _id(),
        _owner("units", "building_id", "buildings", sa.Integer()),
        sa.Column("number", sa.String(16), nullable=False),
        sa.Column("households", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
        sa.UniqueConstraint("building_id", "number", name="uq_units_building_id_number"),
        sa.CheckConstraint("households >= 0", name="ck_units_households"),
    )
    op.create_table(
        "households",
        _id(),
        _owner("households", "unit_id", "units", sa.Integer()),
        sa.Column("room", sa.String(16), nullable=False),
        sa.Column("care", JSON_DOCUMENT, nullable=False),
        sa.Column("resident_name", sa.String(64), nullable=True),
        sa.Column("resident_phone", sa.String(32), nullable=True),
        sa.Column("contact_name", sa.String(64), nullable=True),
        sa.Column("contact_phone", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_households"),
        sa.UniqueConstraint("unit_id", "room", name="uq_households_unit_id_room"),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(64), nullable=False),
        _owner("devices", "community_id", "communities", sa.String(32)),
        sa.Column("kind", sa.String(32), nullable=False),
        _reference("devices", "building_id", "buildings", nullable=True),
        _reference("devices", "unit_id", "units", nullable=True),
        _reference("devices", "household_id", "households", nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("place", sa.String(128), nullable=True),
        sa.Column("attributes", JSON_DOCUMENT, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("device_id", name="pk_devices"),
        sa.CheckConstraint(
            "household_id IS NULL OR unit_id IS NOT NULL", name="ck_devices_household_in_unit"
        ),
        sa.CheckConstraint(
            "unit_id IS NULL OR building_id IS NOT NULL", name="ck_devices_unit_in_building"
        ),
    )
    for column in ("community_id", "building_id", "unit_id", "household_id"):
        op.create_index(f"ix_devices_{column}", "devices", [column])


def downgrade() -> None:
    """Drop every registry table, dependents first."""
    for table in (
        "devices",
        "households",
        "units",
        "buildings",
        "grid_workers",
        "grids",
        "communities",
    ):
        op.drop_table(table)
