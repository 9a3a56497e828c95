"""Street lamp payloads (CONTRACT.md § streetlight)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from devices.contract import Event, Pct, Telemetry

Fault = Literal["lamp_failure", "driver_fault", "overvoltage", "undervoltage", "leakage"]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class StreetlightTelemetry(Telemetry, kw_only=True):
    """Every 60 s; ``energy_kwh`` is the lamp's cumulative meter."""

    on: bool
    dim_pct: Pct
    voltage_v: Annotated[float, msgspec.Meta(ge=0, le=500)]
    current_a: Annotated[float, msgspec.Meta(ge=0, le=100)]
    power_w: Annotated[float, msgspec.Meta(ge=0, le=10_000)]
    energy_kwh: Annotated[float, msgspec.Meta(ge=0, le=1e9)]
    lux: Annotated[float, msgspec.Meta(ge=0, le=200_000)]
    fault: Fault | None = None


class FaultRaised(Event, tag="fault", kw_only=True):
    """A lamp fault began."""

    fault: Fault


class FaultCleared(Event, tag="fault_cleared", kw_only=True):
    """A lamp fault ended."""

    fault: Fault


class Switched(Event, tag="switched", kw_only=True):
    """The lamp switched or changed dimming, and who made it."""

    on: bool
    dim_pct: Pct
    by: Literal["schedule", "command", "sensor"]


StreetlightEvent = FaultRaised | FaultCleared | Switched


class SetLightArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``set_light``: switch and dim; holds until the next scheduled change."""

    on: bool
    dim_pct: Pct = 100


HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class SetScheduleArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``set_schedule`` (contract is silent; our choice, see README): dim window after midnight."""

    dim_from: HHMM = "00:00"
    dim_until: HHMM = "05:00"
    dim_pct: Pct = 50


class StreetlightAttributes(msgspec.Struct, forbid_unknown_fields=True):
    """Registry attributes of a lamp: its circuit (回路) and rated power."""

    circuit: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    rated_power_w: Annotated[float, msgspec.Meta(gt=0, le=2000)]
