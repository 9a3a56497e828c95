"""Who is asking, and what they may see: principals, roles and grid scope.

- admin: sees and changes everything (registry, users, API keys, alerts, commands).
- operator: a community's control room; sees it all, acts on its alerts and devices.
- grid_worker: sees their community's grids and people, and only their grids'
  buildings, households, devices, alerts and commands; acts on those.
- viewer: reads their community (or every community, without one), personal
  data masked; changes nothing.

A device belongs to the grid of its building; a device placed only by position
(a lamp, the robot) to the grid of the nearest building, as alerts are routed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.site import distance_m
from api.models import Role
from registry.models import Building, Device, Grid

# How long a loaded grid map is trusted: registry changes made by another process
# (an import from the CLI) show within this time; the API's own changes at once.
GRID_MAP_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user (by token or API key) and their scope."""

    user_id: int
    username: str
    role: Role
    community: str | None  # None: every community (admins, city-wide viewers)
    grid_ids: frozenset[int] = frozenset()
    grid_names: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        """Admins see and change everything."""
        return self.role is Role.ADMIN

    @property
    def grid_scoped(self) -> bool:
        """True for grid workers: only their grids' buildings, devices and alerts."""
        return self.role is Role.GRID_WORKER

    @property
    def sees_personal_data(self) -> bool:
        """Residents' names and phones: admins, the control room, grid workers (their grids)."""
        return self.role is not Role.VIEWER

    @property
    def can_act(self) -> bool:
        """May acknowledge/resolve alerts and send commands (within their scope)."""
        return self.role is not Role.VIEWER

    def sees_community(self, community: str) -> bool:
        """True if ``community`` is within the principal's communities."""
        return self.community is None or self.community == community


@dataclass(frozen=True, slots=True)
class GridMap:
    """One community's buildings and devices by grid id, and its devices' kinds."""

    building_grid: dict[int, int]
    device_grid: dict[str, int]
    kinds: dict[str, str]

    def devices_in(self, grids: frozenset[int]) -> set[str]:
        """The ids of the devices in ``grids``."""
        return {device for device, grid in self.device_grid.items() if grid in grids}


def load_grid_map(session: Session, community: str) -> GridMap:
    """Read which grid each building and device of ``community`` belongs to."""
    buildings = session.execute(
        select(Building.id, Building.grid_id, Building.lat, Building.lon).where(
            Building.community_id == community
        )
    ).all()
    building_grid = {b.id: b.grid_id for b in buildings}
    device_grid: dict[str, int] = {}
    kinds: dict[str, str] = {}
    rows = session.execute(
        select(Device.device_id, Device.kind, Device.building_id, Device.lat, Device.lon).where(
            Device.community_id == community
        )
    )
    for device_id, kind, building_id, lat, lon in rows:
        kinds[device_id] = kind
        if building_id is not None:
            device_grid[device_id] = building_grid[building_id]
        elif lat is not None and lon is not None and buildings:
            nearest = min(buildings, key=lambda b: distance_m(b.lat, b.lon, lat, lon))
            device_grid[device_id] = nearest.grid_id
    return GridMap(building_grid, device_grid, kinds)


class GridMaps:
    """Grid maps per community, reloaded after ``GRID_MAP_TTL_S`` or a registry change."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._maps: dict[str, tuple[float, GridMap]] = {}
        self._lock = threading.Lock()
        self._monotonic = monotonic

    def get(self, session: Session, community: str) -> GridMap:
        """The community's map, loaded if missing or stale."""
        now = self._monotonic()
        with self._lock:
            cached = self._maps.get(community)
        if cached is not None and now - cached[0] < GRID_MAP_TTL_S:
            return cached[1]
        grid_map = load_grid_map(session, community)
        with self._lock:
            self._maps[community] = (now, grid_map)
        return grid_map

    def invalidate(self) -> None:
        """Forget every map (the API changed the registry)."""
        with self._lock:
            self._maps.clear()


def grid_names(session: Session, grid_ids: frozenset[int]) -> frozenset[str]:
    """The names of grids (alerts name their grid by name)."""
    if not grid_ids:
        return frozenset()
    return frozenset(session.scalars(select(Grid.name).where(Grid.id.in_(grid_ids))))
