"""door: smart unit door (智慧单元门) with face recognition. See README.md."""

from devices.door.rules import RULES
from devices.door.schema import DoorAttributes, DoorEvent, DoorTelemetry, UnlockArgs
from devices.door.simulate import SimulatedDoor
from devices.kind import DeviceKind, NoArgs

KIND = DeviceKind(
    name="door",
    title_zh="单元门",
    telemetry=DoorTelemetry,
    events=DoorEvent,
    commands={"unlock": UnlockArgs, "lock": NoArgs},
    attributes=DoorAttributes,
    tag_keys=("building", "unit"),
    event_tag_fields=frozenset({"method", "reason"}),
    telemetry_interval_s=60,
    rules=RULES,
    simulator=SimulatedDoor,
)
