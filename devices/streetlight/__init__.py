"""streetlight: smart street lamp (智慧路灯). See README.md."""

from devices.kind import DeviceKind
from devices.streetlight.rules import RULES
from devices.streetlight.schema import (
    SetLightArgs,
    SetScheduleArgs,
    StreetlightAttributes,
    StreetlightEvent,
    StreetlightTelemetry,
)
from devices.streetlight.simulate import SimulatedStreetlight

KIND = DeviceKind(
    name="streetlight",
    title_zh="路灯",
    telemetry=StreetlightTelemetry,
    events=StreetlightEvent,
    commands={"set_light": SetLightArgs, "set_schedule": SetScheduleArgs},
    attributes=StreetlightAttributes,
    tag_keys=("circuit",),
    event_tag_fields=frozenset({"fault", "by"}),
    telemetry_interval_s=60,
    rules=RULES,
    simulator=SimulatedStreetlight,
)
