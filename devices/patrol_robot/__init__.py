"""patrol_robot: unmanned night patrol vehicle (无人巡逻车). See README.md."""

from devices.kind import DeviceKind, NoArgs
from devices.patrol_robot.rules import RULES
from devices.patrol_robot.schema import (
    DispatchArgs,
    PatrolRobotAttributes,
    PatrolRobotEvent,
    PatrolRobotTelemetry,
    StartPatrolArgs,
)
from devices.patrol_robot.simulate import SimulatedPatrolRobot

KIND = DeviceKind(
    name="patrol_robot",
    title_zh="巡逻车",
    telemetry=PatrolRobotTelemetry,
    events=PatrolRobotEvent,
    commands={"dispatch": DispatchArgs, "return_to_dock": NoArgs, "start_patrol": StartPatrolArgs},
    attributes=PatrolRobotAttributes,
    tag_keys=(),
    event_tag_fields=frozenset({"scene"}),
    # The slowest regular rate (charging); it reports every 5 s while active.
    telemetry_interval_s=60,
    rules=RULES,
    simulator=SimulatedPatrolRobot,
    sends_snapshots=True,
)
