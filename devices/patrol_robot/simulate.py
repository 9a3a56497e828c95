"""The unmanned night patrol vehicle: leaves its dock at night, walks its route, charges by day."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devices.contract import Community, DeviceRecord
from devices.simulation import SimulatedDevice, next_local_time, weighted_choice

if TYPE_CHECKING:
    from imagery.synthetic import Condition

SPEED_MPS = 1.2
ACTIVE_INTERVAL_MS = 5_000
RESTING_INTERVAL_MS = 60_000
# A night's route (22:00-05:30 by default, 7.5 h) uses about 68 % of the battery, so the
# robot comes home on time with a third left and is full again by about 08:00.
DRAIN_PCT_PER_H = 9.0
CHARGE_PCT_PER_H = 30.0
RETURN_AT_PCT = 20.0
START_ABOVE_PCT = 40.0
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
# A checkpoint's plate is in the frame (and its QR code readable) this close to it.
PLATE_RANGE_M = 15.0


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
        self.detections_per_h = DETECTIONS_PER_ACTIVE_HOUR
        self.stuck = False  # wheels spinning in place: it still believes it is patrolling
        self.camera: Condition | None = None  # a scripted camera fault spoils every frame so
        self.skipped: frozenset[str] = frozenset()  # checkpoints it cannot reach tonight
        self._moved_until = start_ms
        self._patrol_ends = start_ms
        super().__init__(record, community, rng, start_ms)
        self._schedule_patrol(start_ms)
        self._resume_if_out(start_ms)

    # --- schedule -------------------------------------------------------------

    def _schedule_patrol(self, after_ms: int) -> None:
        self.at(
            next_local_time(after_ms, self.route["start"], self.community.timezone), self._start
        )

    def _resume_if_out(self, ts: int) -> None:
        """Started in the middle of the night: the robot is already out, from its dock."""
        tz = self.community.timezone
        started = next_local_time(ts, self.route["start"], tz) - 86_400_000
        if next_local_time(started, self.route["end"], tz) > ts:
            self.battery = 100.0 - DRAIN_PCT_PER_H * (ts - started) / 3_600_000
            self.start_patrol(ts, self.route)

    def _start(self, ts: int) -> None:
        self._schedule_patrol(ts)
        if self.mode in ("charging", "idle") and self.battery > START_ABOVE_PCT:
            self.start_patrol(ts, self.route)

    def start_patrol(self, ts: int, route: dict[str, Any]) -> None:
        """Set off on ``route`` until its end time (reporting every 5 s from now)."""
        self._move(ts)
        self.route = route
        self.mode = "patrolling"
        self._patrol_ends = next_local_time(ts, route["end"], self.community.timezone)
        self._load_route_lap()
        self.report_now(ts)

    def _load_route_lap(self) -> None:
        self.path = [
            Waypoint(c["lat"], c["lon"], c["id"])
            for c in self.route["checkpoints"]
            if c["id"] not in self.skipped
        ]
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
        budget = 0.0 if self.stuck else SPEED_MPS * dt_s
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
        if self.rng.random() < self.detections_per_h * dt_s / 3600:
            self.detect(
                ts, weighted_choice(self.rng, SCENES), round(self.rng.uniform(0.5, 0.99), 2)
            )

    def detect(self, ts: int, scene: str, confidence: float) -> None:
        """Report one of the seven scenes where the robot is now, then send the frame behind it."""
        local = self.local_time(ts)
        snapshot_id = f"s-{local:%Y%m%d-%H%M}-{self.seq + 1:04d}"
        self.send_event(
            ts,
            "detection",
            scene=scene,
            confidence=confidence,
            lat=round(self.lat, 6),
            lon=round(self.lon, 6),
            snapshot_id=snapshot_id,
        )
        self.send_snapshot(snapshot_id, self._frame(ts, scene))

    def _frame(self, ts: int, scene: str) -> bytes:
        """The camera's frame: the scene, the plate of a checkpoint it stands at, any fault."""
        # Imported here: OpenCV is for the robot's camera, not for every process that
        # imports the device kinds (ingest, the API).
        from imagery.checkpoints import checkpoint_qr_text
        from imagery.synthetic import detection_snapshot

        plate = self._checkpoint_in_view()
        return detection_snapshot(
            self.record.device_id,
            self.seq,
            scene,
            ts,
            checkpoint_qr=None
            if plate is None
            else checkpoint_qr_text(self.community.id, self.route["id"], plate),
            timezone=self.community.timezone,
            condition=self.camera,
        )

    def _checkpoint_in_view(self) -> str | None:
        """The route's checkpoint within ``PLATE_RANGE_M``, if the robot is at one."""
        for checkpoint in self.route["checkpoints"]:
            if (
                distance_m(self.lat, self.lon, checkpoint["lat"], checkpoint["lon"])
                <= PLATE_RANGE_M
            ):
                return str(checkpoint["id"])
        return None

    # --- telemetry and commands -----------------------------------------------

    def telemetry(self, ts: int) -> dict[str, Any]:
        """Mode, battery, position, speed and progress along the route."""
        self._move(ts)
        moving = self.mode in ("patrolling", "returning") and not self.stuck
        fields: dict[str, Any] = {
            "mode": self.mode,
            "battery_pct": int(self.battery),
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "speed_mps": SPEED_MPS if moving else 0.0,
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
        self.report_now(ts)
        return None

    def cmd_return_to_dock(self, ts: int, args: dict[str, Any]) -> str | None:
        """Go home now."""
        self._move(ts)
        self._return(ts)
        self.report_now(ts)
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

    # --- faults (scripted by scenarios) -----------------------------------------------

    def get_stuck(self, ts: int) -> None:
        """A wheel is caught (a kerb, a cable): it stays put but believes it is patrolling."""
        self._move(ts)
        self.stuck = True

    def free(self, ts: int) -> None:
        """It gets loose and carries on."""
        self._move(ts)
        self.stuck = False

    def drain_to(self, ts: int, pct: float) -> None:
        """A failing cell: the battery drops to ``pct`` at once."""
        self._move(ts)
        self.battery = min(self.battery, pct)

    def camera_fault(self, ts: int, condition: Condition | None) -> None:
        """Every frame from now on is ``condition`` (dark, blurred, obstructed); None: fixed."""
        self.camera = condition

    def skip_checkpoints(self, ts: int, checkpoint_ids: frozenset[str]) -> None:
        """Some checkpoints cannot be reached (a blocked lane) until ``skip_checkpoints`` again."""
        self._move(ts)
        self.skipped = checkpoint_ids
        self.path = [p for p in self.path if p.checkpoint_id not in checkpoint_ids]
