"""The patrol robot's alert rules (PRODUCT.md): scene, stuck, battery, coverage, camera."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from alerts.rule import Ctx, Observation, Params, Rule, Severity
from alerts.site import DAY_MS, distance_m
from devices.contract import Channel
from devices.patrol_robot.schema import SCENES_ZH

ROBOT = frozenset({"patrol_robot"})
SCENE_SEVERITY = {
    "smoke_fire": Severity.CRITICAL,
    "loitering": Severity.MAJOR,
    "fire_lane_blocked": Severity.MAJOR,
    "ebike_indoor_charging": Severity.MAJOR,
}
SCENE_ACTION = {
    "smoke_fire": "请立即到现场核实火情，必要时拨打119并组织疏散。",
    "loitering": "请安保人员到场查看，确认人员身份和情况。",
    "fire_lane_blocked": "请通知车主挪车，保持消防通道畅通。",
    "ebike_indoor_charging": "请到场制止电动车楼道停放或飞线充电，消除火灾隐患。",
    "garbage_overflow": "请通知保洁人员清运垃圾。",
    "waterlogging": "请排查积水原因，设置警示并疏通排水。",
    "facility_damage": "请到现场设置警示，并报修损坏的设施。",
}


class SceneParams(Params, frozen=True):
    """Confidence threshold, merge radius and time, and severity by scene."""

    min_confidence: float = 0.6
    radius_m: float = 50
    merge_min: int = 30
    severity: dict[str, Severity] = msgspec.field(default_factory=dict)


class Spot(msgspec.Struct, frozen=True):
    """Where a scene was seen (its first detection) and when it was last seen there."""

    subject: str
    lat: float
    lon: float
    last: int


class SceneState(msgspec.Struct, frozen=True):
    """The community's recent spots of one scene."""

    spots: tuple[Spot, ...] = ()


class Scene(Rule[SceneParams, SceneState]):
    """A night scene detected: the same scene within 50 m and 30 min is the same alert.

    State is per community and scene, not per robot: two robots seeing the same
    fire report one fire. A person resolves the alert.
    """

    id = "robot.scene"
    kinds = ROBOT
    channels = frozenset({Channel.EVENT})
    events = frozenset({"detection"})
    keyed_by_device = False
    title_zh = "巡逻车发现异常"
    action_zh = "请到现场查看。"
    params_type = SceneParams
    state_type = SceneState

    def key(self, obs: Observation) -> str:
        """One state per community and scene."""
        return f"{obs.device.community}:{obs.values['scene']}"

    def observe(self, ctx: Ctx[SceneParams, SceneState], obs: Observation) -> None:
        """Merge into a recent spot nearby, or open a new one."""
        params = ctx.params
        if float(obs.values["confidence"]) < params.min_confidence:
            return
        scene = str(obs.values["scene"])
        lat, lon = float(obs.values["lat"]), float(obs.values["lon"])
        window = params.merge_min * 60_000
        spots = [s for s in ctx.state.spots if abs(obs.ts - s.last) <= window]
        near = [(distance_m(s.lat, s.lon, lat, lon), s) for s in spots]
        matches = [(d, s) for d, s in near if d <= params.radius_m]
        if matches:
            spot = min(matches, key=lambda pair: pair[0])[1]
            spots[spots.index(spot)] = Spot(
                spot.subject, spot.lat, spot.lon, max(spot.last, obs.ts)
            )
        else:
            spot = Spot(f"{scene}@{lat:.5f},{lon:.5f}", lat, lon, obs.ts)
            spots.append(spot)
        ctx.state = SceneState(tuple(spots))
        severity = params.severity.get(scene) or SCENE_SEVERITY.get(scene, Severity.MINOR)
        facts = {
            "scene": scene,
            "scene_zh": SCENES_ZH.get(scene, scene),
            "confidence": float(obs.values["confidence"]),
            "snapshot_id": obs.values.get("snapshot_id"),
        }
        ctx.raise_alert(
            severity, subject=spot.subject, latch=True, facts=facts, lat=lat, lon=lon, place=""
        )

    def title(self, facts: Mapping[str, Any]) -> str:
        """巡逻车发现：<场景>."""
        return f"巡逻车发现：{facts.get('scene_zh', '')}"

    def action(self, facts: Mapping[str, Any]) -> str:
        """What to do depends on the scene."""
        return SCENE_ACTION.get(str(facts.get("scene")), self.action_zh)


class StuckParams(Params, frozen=True):
    """Moved under ``min_move_m`` in ``window_s`` while patrolling."""

    min_move_m: float = 1.0
    window_s: int = 300
    # A robot silent this long is offline (device.offline), not known to be stuck.
    max_silence_s: int = 60


class StuckState(msgspec.Struct, frozen=True):
    """Where and since when it has not moved (0: not patrolling), when it last spoke."""

    lat: float = 0.0
    lon: float = 0.0
    since: int = 0
    last: int = 0
    active: bool = False


class Stuck(Rule[StuckParams, StuckState]):
    """Patrolling but not moving, or reporting ``mode: stuck`` itself."""

    id = "robot.stuck"
    kinds = ROBOT
    title_zh = "巡逻车被困"
    action_zh = "请到现场查看巡逻车，帮助脱困并清理路线上的障碍。"
    params_type = StuckParams
    state_type = StuckState

    def observe(self, ctx: Ctx[StuckParams, StuckState], obs: Observation) -> None:
        """Track the spot where it stands; a timer fires when it stood there too long."""
        state, params = ctx.state, ctx.params
        mode = obs.values["mode"]
        lat, lon = float(obs.values["lat"]), float(obs.values["lon"])
        if mode == "stuck":
            ctx.cancel_timer()
            if not state.active:
                facts = {"reported": True, "lat": lat, "lon": lon}
                ctx.raise_alert(Severity.MAJOR, facts=facts, lat=lat, lon=lon)
            ctx.state = StuckState(lat, lon, state.since or obs.ts, obs.ts, True)
            return
        moved = not state.since or distance_m(state.lat, state.lon, lat, lon) >= params.min_move_m
        if mode != "patrolling" or moved:
            if state.active:
                ctx.clear()
            if mode != "patrolling":
                ctx.cancel_timer()
                if state != StuckState():
                    ctx.state = StuckState()
                return
            ctx.state = StuckState(lat, lon, obs.ts, obs.ts)
            ctx.set_timer(obs.ts + params.window_s * 1000)
            return
        ctx.state = StuckState(state.lat, state.lon, state.since, obs.ts, state.active)

    def on_timer(self, ctx: Ctx[StuckParams, StuckState]) -> None:
        """Has not moved since the timer was set."""
        state, params = ctx.state, ctx.params
        if state.active or not state.since or ctx.now_ms - state.last > params.max_silence_s * 1000:
            return
        minutes = round((ctx.now_ms - state.since) / 60_000)
        facts = {"minutes": minutes, "lat": state.lat, "lon": state.lon}
        ctx.raise_alert(
            Severity.MAJOR, since_ms=state.since, facts=facts, lat=state.lat, lon=state.lon
        )
        ctx.state = StuckState(state.lat, state.lon, state.since, state.last, True)


class BatteryParams(Params, frozen=True):
    """Battery under ``below_pct`` while not charging."""

    below_pct: int = 15


class BatteryState(msgspec.Struct, frozen=True):
    """Whether the low battery raised."""

    active: bool = False


class Battery(Rule[BatteryParams, BatteryState]):
    """Low battery away from the charger: it may not make it home."""

    id = "robot.battery"
    kinds = ROBOT
    title_zh = "巡逻车电量低"
    action_zh = "请让巡逻车返回充电桩充电（可下发返航指令）。"
    params_type = BatteryParams
    state_type = BatteryState

    def observe(self, ctx: Ctx[BatteryParams, BatteryState], obs: Observation) -> None:
        """Raise below the threshold unless charging; clear when charging or charged."""
        battery = int(obs.values["battery_pct"])
        low = battery < ctx.params.below_pct and obs.values["mode"] != "charging"
        if low == ctx.state.active:
            return
        if low:
            lat, lon = float(obs.values["lat"]), float(obs.values["lon"])
            ctx.raise_alert(Severity.MINOR, facts={"battery": battery}, lat=lat, lon=lon)
        else:
            ctx.clear()
        ctx.state = BatteryState(low)

    def title(self, facts: Mapping[str, Any]) -> str:
        """巡逻车电量低（N%）."""
        return f"{self.title_zh}（{facts.get('battery', '?')}%）"


class CoverageParams(Params, frozen=True):
    """At least ``min_pct`` of the nightly route's checkpoints passed by ``by`` (local)."""

    min_pct: float = 90
    by: str = "06:00"


class CoverageState(msgspec.Struct, frozen=True):
    """Checkpoints passed since the last deadline, since when the robot is watched."""

    passed: tuple[str, ...] = ()
    watch_from: int = 0
    active: bool = False


class Coverage(Rule[CoverageParams, CoverageState]):
    """Each morning at ``by``: did last night's patrol pass enough of its checkpoints?

    The nightly route is the robot's first route (registry attributes). A night
    the service did not watch from the route's start is not judged.
    """

    id = "robot.coverage"
    kinds = ROBOT
    channels = frozenset({Channel.TELEMETRY, Channel.EVENT})
    events = frozenset({"checkpoint"})
    title_zh = "夜间巡逻覆盖不足"
    action_zh = "请检查巡逻车当晚的故障和电量，并安排人员补巡漏巡的点位。"
    params_type = CoverageParams
    state_type = CoverageState

    def observe(self, ctx: Ctx[CoverageParams, CoverageState], obs: Observation) -> None:
        """Note checkpoints passed; keep the morning deadline armed."""
        state = ctx.state
        new = state if state.watch_from else CoverageState(watch_from=obs.ts)
        if ctx.timer_ms is None:
            ctx.set_timer(ctx.site.next_local_time(obs.ts, ctx.params.by))
        if obs.event == "checkpoint":
            checkpoint = str(obs.values["checkpoint_id"])
            if checkpoint not in new.passed:
                new = CoverageState((*new.passed, checkpoint), new.watch_from, new.active)
        if new != state:
            ctx.state = new

    def on_timer(self, ctx: Ctx[CoverageParams, CoverageState]) -> None:
        """The deadline: judge the night, start counting the next one."""
        state, params, device = ctx.state, ctx.params, ctx.require_device()
        deadline = ctx.now_ms
        ctx.set_timer(ctx.site.next_local_time(deadline, params.by))
        route = device.attributes["routes"][0]
        start = ctx.site.next_local_time(deadline - DAY_MS, route["start"])
        checkpoints = [checkpoint["id"] for checkpoint in route["checkpoints"]]
        active = state.active
        if state.watch_from <= start and checkpoints:
            passed = [c for c in checkpoints if c in state.passed]
            if 100 * len(passed) / len(checkpoints) < params.min_pct:
                missing = [c for c in checkpoints if c not in state.passed]
                facts = {"passed": len(passed), "total": len(checkpoints), "missing": missing}
                ctx.raise_alert(Severity.MINOR, since_ms=start, facts=facts)
                active = True
            elif active:
                ctx.clear()
                active = False
        ctx.state = CoverageState((), state.watch_from, active)

    def title(self, facts: Mapping[str, Any]) -> str:
        """夜间巡逻覆盖不足（N/M 个巡更点）."""
        return f"{self.title_zh}（{facts.get('passed', '?')}/{facts.get('total', '?')}个巡更点）"

    def action(self, facts: Mapping[str, Any]) -> str:
        """Name the checkpoints missed."""
        missing = "、".join(str(c) for c in facts.get("missing", [])[:12])
        return f"{self.action_zh}漏巡：{missing}" if missing else self.action_zh


class CameraParams(Params, frozen=True):
    """How urgent a blind robot is: it sees no smoke or fire while its camera fails."""

    severity: Severity = Severity.MAJOR


class CameraState(msgspec.Struct, frozen=True):
    """Whether the camera fault is raised."""

    active: bool = False


FLAGS_ZH = {"dark": "画面过暗", "blurred": "画面模糊", "obstructed": "镜头遮挡"}


class Camera(Rule[CameraParams, CameraState]):
    """Bad frames in a row (dark, blurred, obstructed), as the imagery service reports them.

    The imagery service publishes ``camera_fault`` when a robot's run of bad
    frames reaches the community's ``camera_fault_after`` and ``camera_ok`` at
    its next good frame (``imagery.events``); the engine hands them over as
    events of the robot, at the time of the frame.
    """

    id = "robot.camera"
    kinds = ROBOT
    channels = frozenset({Channel.EVENT})
    events = frozenset({"camera_fault", "camera_ok"})
    title_zh = "巡逻车摄像头故障"
    action_zh = (
        "请检查巡逻车摄像头：清除遮挡镜头的异物并清洁镜头，检查对焦和补光灯；仍不正常请报修。"
    )
    params_type = CameraParams
    state_type = CameraState

    def observe(self, ctx: Ctx[CameraParams, CameraState], obs: Observation) -> None:
        """Raise on a fault, clear on the first good frame after it."""
        fault = obs.event == "camera_fault"
        if fault == ctx.state.active:
            return
        if fault:
            facts = {
                "bad_frames": int(obs.values["bad_frames"]),
                "flags": _split(obs.values["flags"]),
                "snapshot_ids": _split(obs.values["snapshot_ids"]),
            }
            since = int(obs.values["since_ms"])
            ctx.raise_alert(ctx.params.severity, since_ms=min(since, obs.ts), facts=facts)
        else:
            ctx.clear()
        ctx.state = CameraState(fault)

    def title(self, facts: Mapping[str, Any]) -> str:
        """巡逻车摄像头故障（镜头遮挡，连续3张）."""
        what = "、".join(FLAGS_ZH.get(str(f), str(f)) for f in facts.get("flags", []))
        frames = f"连续{facts.get('bad_frames', '?')}张"
        return f"{self.title_zh}（{what}，{frames}）" if what else f"{self.title_zh}（{frames}）"


def _split(joined: object) -> list[str]:
    """A comma-joined field value (ids, flags) as a list."""
    return [part for part in str(joined).split(",") if part]


RULES = (Scene(), Stuck(), Battery(), Coverage(), Camera())
