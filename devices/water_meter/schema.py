"""Water meter payloads (CONTRACT.md § water_meter)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from devices.contract import Event, Pct, Telemetry

Valve = Literal["open", "closed"]


class WaterMeterTelemetry(Telemetry, kw_only=True):
    """Every 15 min and on every flow start/stop; ``total_l`` is the cumulative register."""

    total_l: Annotated[float, msgspec.Meta(ge=0, le=1e10)]
    flow_lpm: Annotated[float, msgspec.Meta(ge=0, le=500)]
    battery_pct: Pct
    valve: Valve
    reverse_flow: bool = False


class MeterTamper(Event, tag="tamper"):
    """Meter tampered with."""


class LowBattery(Event, tag="low_battery", kw_only=True):
    """Battery running out."""

    battery_pct: Pct | None = None


class ValveChanged(Event, tag="valve_changed", kw_only=True):
    """The valve opened or closed."""

    valve: Valve


WaterMeterEvent = MeterTamper | LowBattery | ValveChanged


class SetValveArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``set_valve``."""

    valve: Valve


class WaterMeterAttributes(msgspec.Struct, forbid_unknown_fields=True):
    """Registry attributes of a meter: none; it is bound to its household."""
