"""The registry's tables: communities, their grids, buildings, units, households and devices.

Structure rows (grids, workers, buildings, units, households) have integer ids
and a natural key that is unique within their parent (a grid's slug, a
building's number...); the importer matches rows by that key, so re-importing a
community keeps every id stable. Devices are keyed by their contract
``device_id``.

Foreign keys along ownership (community → building → unit → household) cascade
on delete; references across it (building → grid, device → unit...) do not, so
the database refuses to drop a unit that a door still hangs on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Relationship, mapped_column, relationship

# Explicit constraint names: Alembic needs them to alter or drop a constraint
# later (SQLite's batch mode rebuilds tables by name).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL so documents can be indexed and queried there later.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")

ROLE_GRID_WORKER: Final = "grid_worker"
ROLE_MANAGER: Final = "manager"
DEFAULT_TIMEZONE = "Asia/Shanghai"


class Base(DeclarativeBase):
    """Declarative base of every registry table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JsonDocument,
        list[dict[str, Any]]: JsonDocument,
    }


def _parent(target: str) -> ForeignKey:
    return ForeignKey(target, ondelete="CASCADE")


def _owned() -> Relationship[Any]:
    return relationship(cascade="all, delete-orphan")


class Community(Base):
    """A community (小区); ``settings`` holds its overrides of alert thresholds."""

    __tablename__ = "communities"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    city: Mapped[str | None] = mapped_column(String(64))
    district: Mapped[str | None] = mapped_column(String(64))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)

    grids: Mapped[list[Grid]] = _owned()
    workers: Mapped[list[GridWorker]] = _owned()
    buildings: Mapped[list[Building]] = _owned()
    devices: Mapped[list[Device]] = _owned()


class Grid(Base):
    """A grid (网格): a set of buildings looked after by its grid workers."""

    __tablename__ = "grids"
    __table_args__ = (UniqueConstraint("community_id", "slug"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community_id: Mapped[str] = mapped_column(_parent("communities.id"))
    slug: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))


class GridWorker(Base):
    """A grid worker (网格员) or manager, and the channels that reach them.

    A worker with role ``manager`` receives escalations for the whole community;
    ``grid`` is then optional (set it when the manager also works a grid).
    Every ``grid_worker`` has a grid.
    """

    __tablename__ = "grid_workers"
    __table_args__ = (
        UniqueConstraint("community_id", "phone"),
        CheckConstraint(f"role IN ('{ROLE_GRID_WORKER}', '{ROLE_MANAGER}')", name="role"),
        CheckConstraint(f"role = '{ROLE_MANAGER}' OR grid_id IS NOT NULL", name="worker_has_grid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community_id: Mapped[str] = mapped_column(_parent("communities.id"))
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16), default=ROLE_GRID_WORKER)
    on_duty: Mapped[bool] = mapped_column(default=True)
    channels: Mapped[list[dict[str, Any]]] = mapped_column(default=list)

    grid: Mapped[Grid | None] = relationship()


class Building(Base):
    """A building (楼), numbered as people say it ("3" in 3号楼), in one grid."""

    __tablename__ = "buildings"
    __table_args__ = (UniqueConstraint("community_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community_id: Mapped[str] = mapped_column(_parent("communities.id"))
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"), index=True)
    number: Mapped[str] = mapped_column(String(16))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    floors: Mapped[int | None] = mapped_column(Integer)

    grid: Mapped[Grid] = relationship()
    units: Mapped[list[Unit]] = _owned()


class Unit(Base):
    """A unit (单元): one stairwell and its door; ``households`` counts the homes behind it."""

    __tablename__ = "units"
    __table_args__ = (
        UniqueConstraint("building_id", "number"),
        CheckConstraint("households >= 0", name="households"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    building_id: Mapped[int] = mapped_column(_parent("buildings.id"))
    number: Mapped[str] = mapped_column(String(16))
    households: Mapped[int] = mapped_column(Integer, default=0)
    rooms: Mapped[list[Household]] = _owned()


class Household(Base):
    """A registered household (户), typically a watched elderly resident's home.

    The resident's and the emergency contact's names and phones are personal
    data: they live here and never travel on MQTT or into device attributes.
    """

    __tablename__ = "households"
    __table_args__ = (UniqueConstraint("unit_id", "room"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[int] = mapped_column(_parent("units.id"))
    room: Mapped[str] = mapped_column(String(16))
    care: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resident_name: Mapped[str | None] = mapped_column(String(64))
    resident_phone: Mapped[str | None] = mapped_column(String(32))
    contact_name: Mapped[str | None] = mapped_column(String(64))
    contact_phone: Mapped[str | None] = mapped_column(String(32))


class Device(Base):
    """A registered device; ``attributes`` follow its kind's schema.

    ``building_id``/``unit_id``/``household_id`` are all set down to the
    device's placement (a meter has all three, a door the first two), so
    loading needs no chain of joins; the checks keep them from contradicting.
    """

    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint("household_id IS NULL OR unit_id IS NOT NULL", name="household_in_unit"),
        CheckConstraint("unit_id IS NULL OR building_id IS NOT NULL", name="unit_in_building"),
    )

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    community_id: Mapped[str] = mapped_column(_parent("communities.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id"), index=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    household_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"), index=True)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    place: Mapped[str | None] = mapped_column(String(128))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    building: Mapped[Building | None] = relationship()
    unit: Mapped[Unit | None] = relationship()
    household: Mapped[Household | None] = relationship()
