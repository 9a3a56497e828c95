"""Scenario files: scripted faults on a simulated community, and the alerts they must raise.

    scenario = load_scenario(SCENARIOS_DIR / "door_forced.yaml")   # ScenarioError if invalid
    start, end = scenario.window(end_by_ms=now, community=zjxc)    # ends no later than now
    simulation = Simulation([zjxc], devices, clock=SimulatedClock(start, 0), ...)
    scenario.apply(simulation)                                      # schedules every fault
    simulation.run(end, stop)
    scenario.expected_alerts(start, zjxc)                           # rule, subject, time window

or all at once, in memory: ``play(scenario, [zjxc], devices, end_by_ms=now)``.
The file format is in ``simulators/README.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, StringConstraints, ValidationError, model_validator

from devices.contract import Community, DeviceRecord
from devices.patrol_robot.simulate import SimulatedPatrolRobot
from devices.simulation import next_local_time
from gridwatch.clock import SimulatedClock
from simulators.engine import DeviceHandle, Report, Simulation
from simulators.faults import (
    FAULT_TYPES,
    DeviceId,
    Duration,
    Fault,
    FaultSpec,
    Group,
    MomentField,
    SkipCheckpoints,
    Spec,
)
from simulators.memory import MemoryTransport, Message

SCENARIOS_DIR = Path(__file__).with_name("scenarios")
MAX_PROBLEMS_SHOWN = 20
RuleId = Literal[
    "door.forced",
    "door.tamper",
    "door.held_open",
    "door.brute_force",
    "light.failure",
    "light.circuit_down",
    "light.day_burning",
    "light.voltage",
    "water.no_use",
    "water.continuous_flow",
    "water.tamper",
    "robot.scene",
    "robot.stuck",
    "robot.battery",
    "robot.coverage",
    "device.offline",
]
RULE_IDS: tuple[str, ...] = RuleId.__args__  # type: ignore[attr-defined]
Clock = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class ScenarioError(ValueError):
    """A scenario that cannot be loaded or applied; ``problems`` name each path in the file."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        more = len(self.problems) - len(shown)
        lines = [f"{source}: {p}" for p in shown] + ([f"... and {more} more"] if more else [])
        super().__init__("\n".join(lines))


class Expectation(Spec):
    """An alert the scenario must raise: its rule, what it is about, and when it opens."""

    rule: RuleId
    device: DeviceId | None = None
    subject: str | None = None  # when the alert is not about a device: a circuit
    severity: Literal["critical", "major", "minor"] | None = None
    between: tuple[MomentField, MomentField]

    @model_validator(mode="after")
    def _one_subject(self) -> Expectation:
        if (self.device is None) == (self.subject is None):
            raise ValueError("give either device or subject")
        return self


@dataclass(frozen=True, slots=True)
class ExpectedAlert:
    """An expectation for one run: the alert opens between ``earliest_ms`` and ``latest_ms``."""

    rule: str
    device: str | None
    subject: str | None
    severity: str | None
    earliest_ms: int
    latest_ms: int


class Scenario(Spec):
    """A scenario file, validated."""

    name: str = ""
    description: str
    community: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{2,32}$")]
    start: Clock | None = None  # the local time the scenario begins; None: any
    duration: Duration
    seed: int = 1
    spontaneous_detections: bool = False  # the robot's own random detections (alerts!)
    faults: list[Fault] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)

    # --- time ---------------------------------------------------------------------------

    def window(self, end_by_ms: int, community: Community) -> tuple[int, int]:
        """The latest run of the scenario that ends no later than ``end_by_ms``: (start, end)."""
        latest = (end_by_ms - self.duration) // 60_000 * 60_000
        if self.start is None:
            return latest, latest + self.duration
        start = next_local_time(latest - 2 * 86_400_000, self.start, community.timezone)
        while (following := next_local_time(start, self.start, community.timezone)) <= latest:
            start = following
        return start, start + self.duration

    def expected_alerts(self, start_ms: int, community: Community) -> list[ExpectedAlert]:
        """The expectations, with their windows resolved for a run starting at ``start_ms``."""
        return [
            ExpectedAlert(
                e.rule,
                e.device,
                e.subject,
                e.severity,
                e.between[0].resolve(start_ms, community),
                e.between[1].resolve(start_ms, community),
            )
            for e in self.expect
        ]

    def involved(self, devices: Iterable[DeviceRecord]) -> list[DeviceRecord]:
        """The devices its faults act on or its expectations name: the cast of a quick run."""
        named = {e.device for e in self.expect}
        return [
            d
            for d in devices
            if d.community == self.community
            and (d.device_id in named or any(targeted(f, d) for f in self.faults))
        ]

    # --- applying -----------------------------------------------------------------------

    def apply(self, simulation: Simulation) -> None:
        """Schedule every fault on the simulation (which started at the scenario's start)."""
        community = simulation.communities.get(self.community)
        if community is None:
            raise ScenarioError(self.name, [f"community: {self.community!r} is not simulated"])
        start = simulation.report.started_ms
        handles = [d for d in simulation.devices if d.record.community == self.community]
        problems = [p for i, f in enumerate(self.faults) for p in _check(i, f, handles)]
        problems += _check_expectations(self.expect, {d.record.device_id for d in handles})
        if problems:
            raise ScenarioError(self.name, problems)
        if not self.spontaneous_detections:
            for device in handles:
                if isinstance(device.sim, SimulatedPatrolRobot):
                    device.sim.detections_per_h = 0.0
        for fault in self.faults:
            begin = fault.at.resolve(start, community)
            for i, device in enumerate(resolve_targets(fault, handles)):
                _schedule(simulation, fault, device, begin + i * fault.stagger_ms)


def _schedule(simulation: Simulation, fault: FaultSpec, device: DeviceHandle, ts: int) -> None:
    device_id = device.record.device_id
    simulation.schedule(ts, device_id, lambda t: fault.begin(simulation, device, t))
    lasts = fault.end_after_ms()
    if lasts is not None:
        simulation.schedule(ts + lasts, device_id, lambda t: fault.end(simulation, device, t))


def _matches(group: Group, record: DeviceRecord) -> bool:
    """Every key the group gives matches the device (circuit: tag or attribute)."""
    circuit = record.tags.get("circuit") or record.attributes.get("circuit")
    return (
        (group.kind is None or record.kind == group.kind)
        and (group.circuit is None or circuit == group.circuit)
        and (group.building is None or record.tags.get("building") == group.building)
        and (group.unit is None or record.tags.get("unit") == group.unit)
        and (group.devices is None or record.device_id in group.devices)
    )


def targeted(fault: FaultSpec, record: DeviceRecord) -> bool:
    """Whether a fault acts on a device (only devices of the fault's kind, if it has one)."""
    target = fault.target
    chosen = record.device_id == target if isinstance(target, str) else _matches(target, record)
    return chosen and (fault.kind is None or record.kind == fault.kind)


def resolve_targets(fault: FaultSpec, handles: Iterable[DeviceHandle]) -> list[DeviceHandle]:
    """The devices a fault acts on, by id."""
    chosen = (d for d in handles if targeted(fault, d.record))
    return sorted(chosen, key=lambda d: d.record.device_id)


def _check(index: int, fault: FaultSpec, handles: list[DeviceHandle]) -> list[str]:
    """What is wrong with a fault's target on these devices."""
    where = f"faults[{index}]"
    target = fault.target
    if isinstance(target, str):
        device = next((d for d in handles if d.record.device_id == target), None)
        if device is None:
            return [f"{where}.target: no device {target!r} in the community"]
        if fault.kind is not None and device.record.kind != fault.kind:
            return [f"{where}.target: {target} is a {device.record.kind}, not a {fault.kind}"]
    targets = resolve_targets(fault, handles)
    if not targets:
        return [f"{where}.target: no {fault.kind or 'device'} matches {target}"]
    if isinstance(fault, SkipCheckpoints):
        return [
            f"{where}.checkpoints: {device.record.device_id} has no checkpoint {c!r}"
            for device in targets
            for c in fault.checkpoints
            if c not in _checkpoints(device.record)
        ]
    return []


def _checkpoints(record: DeviceRecord) -> set[str]:
    return {c["id"] for route in record.attributes.get("routes", []) for c in route["checkpoints"]}


def _check_expectations(expect: list[Expectation], device_ids: set[str]) -> list[str]:
    return [
        f"expect[{i}].device: no device {e.device!r} in the community"
        for i, e in enumerate(expect)
        if e.device is not None and e.device not in device_ids
    ]


# --- loading ---------------------------------------------------------------------------------


def parse_scenario(data: Any, source: str, name: str = "") -> Scenario:
    """Validate parsed YAML as a scenario; ScenarioError naming each problem's path."""
    if isinstance(data, Mapping) and name and "name" not in data:
        data = {"name": name, **data}
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, [_problem(e) for e in exc.errors(include_url=False)]) from None


def _problem(error: Mapping[str, Any]) -> str:
    # The fault's tag (faults[2].door_forced.hold) is noise in a path a person reads.
    path = [p for p in error["loc"] if not (isinstance(p, str) and p in FAULT_TYPES)]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{where or '(file)'}: {error['msg']}"


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file; ScenarioError saying what and where if it is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), [f"cannot read the file: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_scenario(data, str(path), name=path.stem)


def shipped_scenarios() -> list[Path]:
    """The scenario files that come with gridwatch."""
    return sorted(SCENARIOS_DIR.glob("*.yaml"))


# --- playing in memory ---------------------------------------------------------------------


@dataclass(frozen=True)
class Played:
    """A scenario run in memory: its window, its messages, what it published, what it expects."""

    start_ms: int
    end_ms: int
    messages: list[Message]
    report: Report
    expected: list[ExpectedAlert]


def play(
    scenario: Scenario,
    communities: Iterable[Community],
    devices: Iterable[DeviceRecord],
    *,
    end_by_ms: int,
    seed: int | None = None,
    sink: Callable[[Message], None] | None = None,
) -> Played:
    """Run a scenario flat out in memory, ending no later than ``end_by_ms``.

    Every message goes to ``sink`` as it is published (or into ``Played.messages``);
    a device going offline publishes its last will there, as the broker would.
    """
    communities = list(communities)
    devices = list(devices)
    community = next((c for c in communities if c.id == scenario.community), None)
    if community is None:
        raise ScenarioError(scenario.name, [f"community: {scenario.community!r} not given"])
    start, end = scenario.window(end_by_ms, community)
    clock = SimulatedClock(start, 0)
    transport = MemoryTransport(clock, devices, sink)
    simulation = Simulation(
        communities,
        devices,
        clock=clock,
        seed=scenario.seed if seed is None else seed,
        transport=transport,
    )
    scenario.apply(simulation)
    simulation.announce(online=True)
    simulation.run(end, threading.Event())
    expected = scenario.expected_alerts(start, community)
    return Played(start, end, transport.messages, simulation.report, expected)


__all__ = [
    "RULE_IDS",
    "SCENARIOS_DIR",
    "ExpectedAlert",
    "Played",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "play",
    "shipped_scenarios",
]
