"""Patrol robot payloads (CONTRACT.md § patrol_robot)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from devices.contract import (
    Event,
    Latitude,
    Longitude,
    OpaqueId,
    Pct,
    SnapshotId,
    Telemetry,
)

Mode = Literal["patrolling", "returning", "charging", "idle", "stuck"]
Scene = Literal[
    "loitering",
    "fire_lane_blocked",
    "ebike_indoor_charging",
    "garbage_overflow",
    "smoke_fire",
    "waterlogging",
    "facility_damage",
]
SCENES_ZH: dict[str, str] = {
    "loitering": "夜间人员滞留",
    "fire_lane_blocked": "消防通道占用",
    "ebike_indoor_charging": "电动车违规停放/飞线充电",
    "garbage_overflow": "垃圾满溢/乱堆放",
    "smoke_fire": "烟火",
    "waterlogging": "积水",
    "facility_damage": "设施损坏",
}
RouteId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class PatrolRobotTelemetry(Telemetry, kw_only=True):
    """Every 5 s while active, every 60 s while charging."""

    mode: Mode
    battery_pct: Pct
    lat: Latitude
    lon: Longitude
    speed_mps: Annotated[float, msgspec.Meta(ge=0, le=20)]
    route_id: RouteId | None = None
    waypoint: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None


class Detection(Event, tag="detection", kw_only=True):
    """One of the seven night scenes, with the snapshot behind it."""

    scene: Scene
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)]
    lat: Latitude
    lon: Longitude
    snapshot_id: SnapshotId | None = None


class CheckpointPassed(Event, tag="checkpoint", kw_only=True):
    """Passed a patrol checkpoint (巡更点)."""

    checkpoint_id: OpaqueId
    lat: Latitude | None = None
    lon: Longitude | None = None
    # Set by the imagery service when a snapshot showed the checkpoint's QR plate: the
    # backend's evidence, not the robot's own word (so not a sign of the robot's life).
    source: Literal["imagery"] | None = None
    snapshot_id: SnapshotId | None = None


PatrolRobotEvent = Detection | CheckpointPassed


class DispatchArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``dispatch``: go and look at a point."""

    lat: Latitude
    lon: Longitude


class StartPatrolArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``start_patrol``."""

    route_id: RouteId


class Checkpoint(msgspec.Struct, forbid_unknown_fields=True):
    """A patrol checkpoint on a route."""

    id: OpaqueId
    lat: Latitude
    lon: Longitude


class Route(msgspec.Struct, forbid_unknown_fields=True):
    """A night route: checkpoints in order, and when the patrol starts and ends."""

    id: RouteId
    checkpoints: list[Checkpoint]
    start: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "22:00"
    end: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "05:30"


class PatrolRobotAttributes(msgspec.Struct, forbid_unknown_fields=True):
    """Registry attributes of a robot: its dock and its routes."""

    dock_lat: Latitude
    dock_lon: Longitude
    routes: list[Route]
