"""water_meter: smart water meter in an elderly household (智能水表, 重点管护). See README.md."""

from devices.kind import DeviceKind, NoArgs
from devices.water_meter.rules import RULES
from devices.water_meter.schema import (
    SetValveArgs,
    WaterMeterAttributes,
    WaterMeterEvent,
    WaterMeterTelemetry,
)
from devices.water_meter.simulate import SimulatedWaterMeter

KIND = DeviceKind(
    name="water_meter",
    title_zh="水表",
    telemetry=WaterMeterTelemetry,
    events=WaterMeterEvent,
    commands={"read_now": NoArgs, "set_valve": SetValveArgs},
    attributes=WaterMeterAttributes,
    tag_keys=("building", "unit", "room"),
    event_tag_fields=frozenset(),
    telemetry_interval_s=15 * 60,
    rules=RULES,
    simulator=SimulatedWaterMeter,
)
