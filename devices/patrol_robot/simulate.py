"""The unmanned night patrol vehicle: leaves its dock at night, walks its route, charges by day."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from devices.contract import Community, DeviceRecord
from devices.simulation import SimulatedDevice, next_local_time, weighted_choice

SPEED_MPS = 1.2
ACTIVE_INTERVAL_MS = 5_000
RESTING_INTERVAL_MS = 60_000
DRAIN_PCT_PER_H = 11.0
CHARGE_PCT_PER_H = 30.0
RETURN_AT_PCT = 20.0
# A handful of scenes a night; most are everyday nuisances, fire is rare.
DETECTIONS_PER_ACTIVE_HOUR = 0.6
SCENES = (
    ("garbage_overflow", 0.28),
    ("fire_lane_blocked", 0.2),
    ("ebike_indoor_charging", 0.15),
    ("loitering", 0.15),
    ("facility_damage", 0.1),
    ("waterlogging", 0.1),
    ("smoke_fire", 0.02),
)
M_PER_DEG_LAT = 110_540.0


@dataclass(frozen=True, slots=True)
class Waypoint:
    """A point to drive to; ``checkpoint_id`` when it is a patrol checkpoint."""

    lat: float
    lon: float
    checkpoint_id: str | None = None


def distance_m(a_lat: float, a_lon: float, b_lat: float, b_lon: float) -> float:
    """Flat-earth distance: exact enough inside one community."""
    dx = (b_lon - a_lon) * M_PER_DEG_LAT * math.cos(math.radians(a_lat))
    dy = (b_lat - a_lat) * M_PER_DEG_LAT
    return math.hypot(dx, dy)


class SimulatedPatrolRobot(SimulatedDevice):
    """Patrols its route from the route's start to its end time, then returns and charges."""

    def __init__(
        self, record: DeviceRecord, community: Community, rng: random.Random, start_ms: int
    ) -> None:
        attrs = record.attributes
        self.dock = Waypoint(float(attrs["dock_lat"]), float(attrs["dock_lon"]))
        self.routes: dict[str, dict[str, Any]] = {r["id"]: r for r in attrs["routes"]}
        self.route: dict[str, Any] = attrs["routes"][0]
        self.lat, self.lon = self.dock.lat, self.dock.lon
        self.battery = 100.0
        self.mode = "charging"
        self.path: list[Waypoint] = []
        self.waypoint: int | None = None
        self._moved_until = start_ms
        self._patrol_ends = start_ms
        super().__init__(record, community, rng, start_ms)
        self._schedule_patrol(start_ms)

    # --- schedule -------------------------------------------------------------

    def _schedule_patrol(self, after_ms: int) -> None:
        self.at(
            next_local_time(after_ms, self.route["start"], self.community.timezone), self._start
        )

    def _start(self, ts: int) -> None:
        self._schedule_patrol(ts)
        if self.mode in ("charging", "idle") and self.battery > RETURN_AT_PCT + 20:
            self.start_patrol(ts, self.route)

    def start_patrol(self, ts: int, route: dict[str, Any]) -> None:
        """Set off on ``route`` until its end time."""
        self._move(ts)
        self.route = route
        self.mode = "patrolling"
        self._patrol_ends = next_local_time(ts, route["end"], self.community.timezone)
        self._load_route_lap()

    def _load_route_lap(self) -> None:
        self.path = [Waypoint(c["lat"], c["lon"], c["id"]) for c in self.route["checkpoints"]]
        self.waypoint = 0

    def heartbeat_interval_ms(self) -> int:
        """Every 5 s while active, every 60 s while resting."""
        return (
            ACTIVE_INTERVAL_MS if self.mode in ("patrolling", "returning") else RESTING_INTERVAL_MS
        )

    # --- movement -------------------------------------------------------------

    def _move(self, ts: int) -> None:
        """Drive along the path (or charge) for the time since the last update."""
        start, self._moved_until = self._moved_until, ts
        dt_s = max(0, ts - start) / 1000
        if self.mode in ("charging", "idle"):
            self.battery = min(100.0, self.battery + CHARGE_PCT_PER_H * dt_s / 3600)
            self.mode = "idle" if self.battery >= 100 else "charging"
            return
        if self.mode not in ("patrolling", "returning"):
            return
        self.battery = max(0.0, self.battery - DRAIN_PCT_PER_H * dt_s / 3600)
        budget = SPEED_MPS * dt_s
        elapsed_s = 0.0
        while budget > 0 and self.path:
            target = self.path[0]
            leg = distance_m(self.lat, self.lon, target.lat, target.lon)
            if leg > budget:
                f = budget / leg
                self.lat += (target.lat - self.lat) * f
                self.lon += (target.lon - self.lon) * f
                break
            budget -= leg
            elapsed_s += leg / SPEED_MPS
            self.lat, self.lon = target.lat, target.lon
            self.path.pop(0)
            self._arrived(start + int(elapsed_s * 1000), target)
        self._maybe_detect(ts, dt_s)
        if self.mode == "patrolling" and (ts >= self._patrol_ends or self.battery < RETURN_AT_PCT):
            self._return(ts)

    def _arrived(self, ts: int, point: Waypoint) -> None:
        if point.checkpoint_id is not None and self.mode == "patrolling":
            self.send_event(
                ts, "checkpoint", checkpoint_id=point.checkpoint_id, lat=point.lat, lon=point.lon
            )
            self.waypoint = (self.waypoint or 0) + 1
        if self.path:
            return
        if self.mode == "patrolling":
            self._load_route_lap()
        elif self.mode == "returning":
            self.mode, self.waypoint = "charging", None

    def _return(self, ts: int) -> None:
        self.mode = "returning"
        self.path = [self.dock]

    def _maybe_detect(self, ts: int, dt_s: float) -> None:
        if self.mode != "patrolling":
            return
        if self.rng.random() < DETECTIONS_PER_ACTIVE_HOUR * dt_s / 3600:
            self.send_event(
                ts,
                "detection",
                scene=weighted_choice(self.rng, SCENES),
                confidence=round(self.rng.uniform(0.5, 0.99), 2),
                lat=round(self.lat, 6),
                lon=round(self.lon, 6),
            )

    # --- telemetry and commands -----------------------------------------------

    def telemetry(self, ts: int) -> dict[str, Any]:
        """Mode, battery, position, speed and progress along the route."""
        self._move(ts)
        active = self.mode in ("patrolling", "returning")
        fields: dict[str, Any] = {
            "mode": self.mode,
            "battery_pct": int(self.battery),
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "speed_mps": SPEED_MPS if active else 0.0,
        }
        if self.mode == "patrolling":
            fields["route_id"] = self.route["id"]
            fields["waypoint"] = self.waypoint
        return fields

    def cmd_dispatch(self, ts: int, args: dict[str, Any]) -> str | None:
        """Drive to a point, then home."""
        self._move(ts)
        self.mode = "returning"
        self.path = [Waypoint(float(args["lat"]), float(args["lon"])), self.dock]
        return None

    def cmd_return_to_dock(self, ts: int, args: dict[str, Any]) -> str | None:
        """Go home now."""
        self._move(ts)
        self._return(ts)
        return None

    def cmd_start_patrol(self, ts: int, args: dict[str, Any]) -> str | None:
        """Start a patrol on a known route."""
        route = self.routes.get(args["route_id"])
        if route is None:
            return f"unknown route {args['route_id']}"
        if self.battery <= RETURN_AT_PCT:
            return "battery too low"
        self.start_patrol(ts, route)
        return None
