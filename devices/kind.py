"""What a device kind declares: its payload schemas, its storage mapping and its behaviour.

A kind is one sub-package of ``devices`` that builds one ``DeviceKind`` and is
listed in ``devices.KINDS``. The runners (ingest, simulators, dashboards, alert
rules) only ever loop over that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec

from devices.contract import CmdAck, Community, DeviceRecord, Status, Telemetry

if TYPE_CHECKING:
    import random

    from alerts.rule import Rule
    from devices.simulation import SimulatedDevice

SimulatorFactory = Callable[[DeviceRecord, Community, "random.Random", int], "SimulatedDevice"]


class NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Arguments of a command that takes none."""


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device, as every runner sees it."""

    name: str
    title_zh: str
    telemetry: type[Telemetry]
    events: Any  # a Union of Event subclasses, tagged by the "event" field
    commands: Mapping[str, type[msgspec.Struct]]
    attributes: type[msgspec.Struct]
    tag_keys: tuple[str, ...]
    event_tag_fields: frozenset[str]
    telemetry_interval_s: int
    simulator: SimulatorFactory
    sends_snapshots: bool = False
    rules: tuple[Rule[Any, Any], ...] = ()  # the kind's alert rules (<kind>/rules.py)
    measurement_event: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "measurement_event", f"{self.name}_event")

    @property
    def measurement(self) -> str:
        """The telemetry measurement: the kind's own name."""
        return self.name

    @cached_property
    def telemetry_decoder(self) -> msgspec.json.Decoder[Any]:
        """A reusable JSON decoder for this kind's telemetry."""
        return msgspec.json.Decoder(self.telemetry)

    @cached_property
    def event_decoder(self) -> msgspec.json.Decoder[Any]:
        """A reusable JSON decoder for this kind's events."""
        return msgspec.json.Decoder(self.events)

    def event_names(self) -> list[str]:
        """The ``event`` values this kind may send."""
        members = getattr(self.events, "__args__", (self.events,))
        return [m.__struct_config__.tag for m in members]

    def simulate(
        self, record: DeviceRecord, community: Community, rng: random.Random, start_ms: int
    ) -> SimulatedDevice:
        """A simulated device of this kind, which checks command arguments against ``commands``."""
        device = self.simulator(record, community, rng, start_ms)
        device.command_args = self.commands
        return device

    def validate_attributes(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Check registry attributes against the kind's schema (``msgspec.ValidationError``)."""
        return msgspec.to_builtins(msgspec.convert(dict(raw), self.attributes))  # type: ignore[no-any-return]


STATUS_DECODER = msgspec.json.Decoder(Status)
CMD_ACK_DECODER = msgspec.json.Decoder(CmdAck)
