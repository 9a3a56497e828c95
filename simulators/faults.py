"""The faults a scenario can script, and what each does to the devices it targets.

Every fault names its moment (``at``, see ``simulators.when``) and its target: a
device id, or a group (a circuit, a building, a unit, a kind, a list of ids).
A fault of one kind of device (``kind``) picks only that kind out of a group.
``begin`` runs at ``at`` (plus ``stagger_ms`` for each further device of a
group); faults with a ``duration`` ``end`` then, and last to the end of the run
without one.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    model_validator,
)

from devices.door.simulate import SimulatedDoor
from devices.patrol_robot.schema import Scene
from devices.patrol_robot.simulate import SimulatedPatrolRobot
from devices.simulation import SimulatedDevice
from devices.streetlight.schema import Fault as LampFault
from devices.streetlight.simulate import SimulatedStreetlight
from devices.water_meter.simulate import SimulatedWaterMeter
from simulators.engine import DeviceHandle, Simulation
from simulators.link import GARBLINGS, Garbling
from simulators.when import Moment, parse_duration


def _moment(value: Any) -> Moment:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1440:
        # YAML 1.1 reads an unquoted 02:10 as the base-60 number 130: turn it back.
        return Moment.parse(f"{value // 60:02d}:{value % 60:02d}")
    if not isinstance(value, str):
        raise ValueError("a moment is text like +2h30m, 02:10 or sunrise+30m")
    return Moment.parse(value)


def _duration(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("a duration is text like 90s, 15m or 1h30m")
    return parse_duration(value)


def _signed_duration(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("an offset is text like +20m or -90s")
    sign = -1 if value.startswith("-") else 1
    return sign * parse_duration(value.lstrip("+-"))


MomentField = Annotated[Moment, PlainValidator(_moment)]
Duration = Annotated[int, BeforeValidator(_duration), Field(gt=0)]  # milliseconds
SignedDuration = Annotated[int, BeforeValidator(_signed_duration)]  # milliseconds
DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
KindName = Literal["door", "streetlight", "water_meter", "patrol_robot"]


class Spec(BaseModel):
    """Base of every part of a scenario file: unknown keys are typos, not extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Group(Spec):
    """Devices chosen by what they share; every given key must match."""

    kind: KindName | None = None
    circuit: str | None = None
    building: str | None = None
    unit: str | None = None
    devices: list[DeviceId] | None = None

    def __str__(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self if v is not None)

    @model_validator(mode="after")
    def _not_everything(self) -> Group:
        if not self.model_fields_set:
            raise ValueError("a group needs at least one of kind, circuit, building, unit, devices")
        return self


Target = DeviceId | Group
S = TypeVar("S", bound=SimulatedDevice)


def sim_as(device: DeviceHandle, cls: type[S]) -> S:
    """The device's simulation, as the kind a fault acts on (checked when targets resolve)."""
    sim = device.sim
    if not isinstance(sim, cls):
        raise TypeError(f"{device.record.device_id} is not a {cls.__name__}")
    return sim


class FaultSpec(Spec):
    """What every fault has: when, on what, and how it starts and ends."""

    at: MomentField
    target: Target
    kind: ClassVar[str | None] = None  # the device kind it acts on; None: any kind
    stagger_ms: ClassVar[int] = 0  # each further device of a group begins this much later

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Start the fault on one device."""

    def end_after_ms(self) -> int | None:
        """When the fault ends, after it began (None: it lasts)."""
        duration: int | None = getattr(self, "duration", None)
        return duration

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Undo the fault on one device."""


# --- water meters ----------------------------------------------------------------------


class NoWaterUse(FaultSpec):
    """The household's last draw is at ``at``; then no water is used (a welfare case)."""

    fault: Literal["no_water_use"]
    duration: Duration | None = None
    kind = "water_meter"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """A last short draw, then silence on the register."""
        sim_as(device, SimulatedWaterMeter).stop_use(ts)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Water is used again."""
        sim_as(device, SimulatedWaterMeter).resume_use(ts)


class TapRunning(FaultSpec):
    """A tap left running (or a leak) at ``flow_lpm`` for ``duration``."""

    fault: Literal["tap_running"]
    duration: Duration = parse_duration("3h")
    flow_lpm: Annotated[float, Field(gt=0, le=60)] = 4.0
    kind = "water_meter"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Open the tap."""
        sim_as(device, SimulatedWaterMeter).run_tap(ts, self.flow_lpm)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Someone turns it off."""
        sim_as(device, SimulatedWaterMeter).close_tap(ts)


class MeterTamper(FaultSpec):
    """The meter reports tampering (a ``tamper`` event)."""

    fault: Literal["meter_tamper"]
    kind = "water_meter"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Send the event."""
        sim_as(device, SimulatedWaterMeter).tamper(ts)


class ReverseFlow(FaultSpec):
    """Readings say ``reverse_flow: true`` for ``duration``."""

    fault: Literal["reverse_flow"]
    duration: Duration = parse_duration("30m")
    kind = "water_meter"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Water runs backwards."""
        sim_as(device, SimulatedWaterMeter).set_reverse_flow(ts, True)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The meter is refitted."""
        sim_as(device, SimulatedWaterMeter).set_reverse_flow(ts, False)


# --- street lamps ------------------------------------------------------------------------


class LampFailure(FaultSpec):
    """The lamp reports ``fault`` (dark for lamp_failure and driver_fault) until repaired."""

    fault: Literal["lamp_failure"]
    reports: LampFault = "lamp_failure"
    duration: Duration | None = None
    kind = "streetlight"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The fault appears."""
        sim_as(device, SimulatedStreetlight).fail(ts, self.reports)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The lamp is repaired."""
        sim_as(device, SimulatedStreetlight).repair(ts)


class CircuitFailure(FaultSpec):
    """A whole circuit fails.

    ``unpowered`` (a tripped breaker): the lamps' controllers lose power with
    their lamps, so their connections die and the broker publishes their wills.
    ``dark`` (a contactor that does not close): the controllers stay up and each
    reports ``lamp_failure``.
    """

    fault: Literal["circuit_failure"]
    how: Literal["unpowered", "dark"] = "unpowered"
    duration: Duration | None = None
    kind = "streetlight"
    stagger_ms = 1_000

    @model_validator(mode="after")
    def _needs_a_circuit(self) -> CircuitFailure:
        if not isinstance(self.target, Group) or self.target.circuit is None:
            raise ValueError("a circuit failure targets a group with a circuit, e.g. {circuit: C}")
        return self

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The lamp goes dark (and, unpowered, offline)."""
        lamp = sim_as(device, SimulatedStreetlight)
        if self.how == "dark":
            lamp.fail(ts, "lamp_failure")
            return
        lamp.power(ts, False)
        simulation.go_offline(device.record.device_id)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Power (or the contactor) is back."""
        lamp = sim_as(device, SimulatedStreetlight)
        if self.how == "dark":
            lamp.repair(ts)
            return
        lamp.power(ts, True)
        simulation.come_online(device.record.device_id, ts)


class DayBurning(FaultSpec):
    """The relay welds: the lamp is lit and stays lit through the day."""

    fault: Literal["day_burning"]
    duration: Duration | None = None
    kind = "streetlight"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Stuck on."""
        sim_as(device, SimulatedStreetlight).stick_on(ts)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The relay is replaced."""
        sim_as(device, SimulatedStreetlight).unstick(ts)


class VoltageSag(FaultSpec):
    """The supply reads about ``volts`` for ``duration`` (above 242 V: a surge)."""

    fault: Literal["voltage_sag"]
    volts: Annotated[float, Field(ge=0, le=400)] = 185.0
    duration: Duration = parse_duration("30m")
    kind = "streetlight"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The supply drops."""
        sim_as(device, SimulatedStreetlight).set_supply(ts, self.volts)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The supply is nominal again."""
        sim_as(device, SimulatedStreetlight).set_supply(ts, None)


# --- doors -------------------------------------------------------------------------------


class DoorForced(FaultSpec):
    """The door is forced open without an unlock; it swings shut after ``hold``."""

    fault: Literal["door_forced"]
    hold: Duration = parse_duration("40s")
    kind = "door"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Force it."""
        sim_as(device, SimulatedDoor).force_open(ts, self.hold)


class DoorTamper(FaultSpec):
    """The reader or its enclosure is tampered with."""

    fault: Literal["door_tamper"]
    kind = "door"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Send the event."""
        sim_as(device, SimulatedDoor).tamper(ts)


class DoorHeldOpen(FaultSpec):
    """A resident comes in and wedges the door open for ``hold``."""

    fault: Literal["door_held_open"]
    hold: Duration = parse_duration("10m")
    kind = "door"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Unlock, open, and leave it open."""
        sim_as(device, SimulatedDoor).hold_open(ts, self.hold)


class FailedFaces(FaultSpec):
    """A stranger tries the face reader ``count`` times, ``every`` apart."""

    fault: Literal["failed_faces"]
    count: Annotated[int, Field(ge=1, le=100)] = 6
    every: Duration = parse_duration("15s")
    kind = "door"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The tries."""
        sim_as(device, SimulatedDoor).fail_faces(ts, self.count, self.every)


# --- the patrol robot ---------------------------------------------------------------------


class RobotStuck(FaultSpec):
    """A wheel is caught: the robot stands still but still reports ``patrolling``."""

    fault: Literal["robot_stuck"]
    duration: Duration = parse_duration("20m")
    kind = "patrol_robot"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Stuck."""
        sim_as(device, SimulatedPatrolRobot).get_stuck(ts)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Loose again."""
        sim_as(device, SimulatedPatrolRobot).free(ts)


class RobotLowBattery(FaultSpec):
    """A failing cell: the battery drops to ``battery_pct`` at once (the robot heads home)."""

    fault: Literal["robot_low_battery"]
    battery_pct: Annotated[float, Field(ge=0, le=100)] = 12.0
    kind = "patrol_robot"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The drop."""
        sim_as(device, SimulatedPatrolRobot).drain_to(ts, self.battery_pct)


class SkipCheckpoints(FaultSpec):
    """The robot cannot reach ``checkpoints`` (a blocked lane) and drives past them."""

    fault: Literal["skip_checkpoints"]
    checkpoints: Annotated[list[DeviceId], Field(min_length=1)]
    duration: Duration | None = None
    kind = "patrol_robot"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The lane is blocked."""
        robot = sim_as(device, SimulatedPatrolRobot)
        robot.skip_checkpoints(ts, frozenset(self.checkpoints))

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The lane is clear."""
        sim_as(device, SimulatedPatrolRobot).skip_checkpoints(ts, frozenset())


class RobotDetects(FaultSpec):
    """The robot detects ``scene`` where it is, with ``confidence``."""

    fault: Literal["robot_detects"]
    scene: Scene
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.9
    kind = "patrol_robot"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The detection."""
        sim_as(device, SimulatedPatrolRobot).detect(ts, self.scene, self.confidence)


class RobotCamera(FaultSpec):
    """Every frame the robot sends is ``condition`` (lens covered, dark, out of focus)."""

    fault: Literal["robot_camera"]
    condition: Literal["dark", "blurred", "obstructed"] = "obstructed"
    duration: Duration | None = None
    kind = "patrol_robot"

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The camera fails."""
        sim_as(device, SimulatedPatrolRobot).camera_fault(ts, self.condition)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The camera works again."""
        sim_as(device, SimulatedPatrolRobot).camera_fault(ts, None)


# --- any device: its connection and its messages -------------------------------------------


class Offline(FaultSpec):
    """The device's connection dies without DISCONNECT (the broker publishes its will)."""

    fault: Literal["offline"]
    duration: Duration | None = None

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Drop the connection."""
        simulation.go_offline(device.record.device_id)

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Reconnect and say online again."""
        simulation.come_online(device.record.device_id, ts)


class Silent(FaultSpec):
    """The device hangs: its connection stays up but it sends nothing."""

    fault: Literal["silent"]
    duration: Duration | None = None

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Hang."""
        device.impair().hung = True

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Reboot."""
        device.impair().hung = False


class ClockDrift(FaultSpec):
    """The device's clock jumps by ``offset`` and then drifts by ``per_hour``."""

    fault: Literal["clock_drift"]
    offset: SignedDuration = 0
    per_hour: SignedDuration = 0
    duration: Duration | None = None

    @model_validator(mode="after")
    def _some_error(self) -> ClockDrift:
        if not self.offset and not self.per_hour:
            raise ValueError("a clock drift needs an offset, a per_hour drift, or both")
        return self

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The clock goes wrong."""
        link = device.impair()
        link.clock_offset_ms, link.drift_ms_per_h, link.drift_since_ms = (
            self.offset,
            float(self.per_hour),
            ts,
        )

    def end(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """The clock is set right (NTP)."""
        link = device.impair()
        link.clock_offset_ms, link.drift_ms_per_h = 0, 0.0


class Malformed(FaultSpec):
    """The device's next ``count`` messages are garbled, taking turns among ``how``."""

    fault: Literal["malformed"]
    count: Annotated[int, Field(ge=1, le=10_000)] = 3
    how: Annotated[list[Garbling], Field(min_length=1)] = list(GARBLINGS)

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Queue the garblings."""
        device.impair().garblings.extend(self.how[i % len(self.how)] for i in range(self.count))


class Duplicate(FaultSpec):
    """The device's next ``count`` messages are each sent twice."""

    fault: Literal["duplicate"]
    count: Annotated[int, Field(ge=1, le=10_000)] = 3

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Queue the repeats."""
        device.impair().duplicates += self.count


class OutOfOrder(FaultSpec):
    """The device's next ``count`` pairs of messages go out in swapped order."""

    fault: Literal["out_of_order"]
    count: Annotated[int, Field(ge=1, le=10_000)] = 2

    def begin(self, simulation: Simulation, device: DeviceHandle, ts: int) -> None:
        """Queue the swaps."""
        device.impair().swaps += self.count


Fault = Annotated[
    NoWaterUse
    | TapRunning
    | MeterTamper
    | ReverseFlow
    | LampFailure
    | CircuitFailure
    | DayBurning
    | VoltageSag
    | DoorForced
    | DoorTamper
    | DoorHeldOpen
    | FailedFaces
    | RobotStuck
    | RobotLowBattery
    | SkipCheckpoints
    | RobotDetects
    | RobotCamera
    | Offline
    | Silent
    | ClockDrift
    | Malformed
    | Duplicate
    | OutOfOrder,
    Field(discriminator="fault"),
]

# Every fault by its name in the file (``fault: door_forced``).
FAULT_TYPES: dict[str, type[FaultSpec]] = {
    get_args(member.model_fields["fault"].annotation)[0]: member
    for member in get_args(get_args(Fault)[0])
}
