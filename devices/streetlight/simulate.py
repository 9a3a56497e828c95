"""A smart street lamp: lit from sunset to sunrise, dimmed after midnight, metering its energy."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from astral import Observer
from astral.sun import elevation, sunrise, sunset

from devices.contract import Community, DeviceRecord
from devices.simulation import SimulatedDevice, next_local_time

STANDBY_W = 0.4
# Faults that leave the lamp dark; a supply out of range or a leakage does not.
DARK_FAULTS = frozenset({"lamp_failure", "driver_fault"})
NOMINAL_V, VOLTAGE_SIGMA_V, SAG_SIGMA_V = 221.0, 2.5, 1.5
POWER_NOISE = 0.015
# What the lamp's own light adds to its photocell at full output.
LAMP_SPILL_LUX = 8.0
# Horizontal illuminance of a clear sky by solar elevation, below the horizon
# (degrees, log10 lux): civil twilight ends near 3 lx, astronomical near 0.001 lx.
TWILIGHT = ((-18.0, -3.0), (-12.0, -2.0), (-6.0, 0.5), (-0.8, 2.4), (0.0, 2.6))
DIRECT_LUX = 128_000.0


@lru_cache(maxsize=4096)
def sun_times(lat: float, lon: float, day: date, timezone: str) -> tuple[int, int]:
    """Sunrise and sunset (ms since the epoch) on the local calendar ``day`` at a place.

    The time zone matters: asked for a UTC date, astral answers with the sunrise
    of the next local morning at UTC+8, and lamps would never switch off.
    """
    observer = Observer(latitude=lat, longitude=lon)
    rise = sunrise(observer, day, tzinfo=timezone)
    set_ = sunset(observer, day, tzinfo=timezone)
    return int(rise.timestamp() * 1000), int(set_.timestamp() * 1000)


@lru_cache(maxsize=16_384)
def clear_sky_lux(lat: float, lon: float, minute: int) -> float:
    """Illuminance under a clear sky at a place, for the minute ``minute`` (ms // 60,000)."""
    when = datetime.fromtimestamp(minute * 60, UTC)
    height = elevation(Observer(latitude=lat, longitude=lon), when)
    if height >= 0:
        sine = math.sin(math.radians(height))
        return 10 ** TWILIGHT[-1][1] + DIRECT_LUX * sine * math.exp(-0.2 / max(sine, 0.01))
    if height <= TWILIGHT[0][0]:
        return 10 ** TWILIGHT[0][1]
    for (h0, l0), (h1, l1) in itertools.pairwise(TWILIGHT):
        if height <= h1:
            return float(10 ** (l0 + (l1 - l0) * (height - h0) / (h1 - h0)))
    raise AssertionError("unreachable: the last twilight step is the horizon")


@lru_cache(maxsize=1024)
def cloud_factor(community: str, day: int) -> float:
    """How much of the clear sky's light gets through on a day (days since 1970) at a community."""
    return random.Random(f"{community}:{day}").uniform(0.3, 1.0)


class SimulatedStreetlight(SimulatedDevice):
    """Switches with the sun, dims on its schedule, meters its energy; heartbeats every 60 s."""

    telemetry_interval_ms = 60_000

    def __init__(
        self, record: DeviceRecord, community: Community, rng: random.Random, start_ms: int
    ) -> None:
        super().__init__(record, community, rng, start_ms)
        self.rated_w = float(record.attributes["rated_power_w"])
        self.energy_kwh = round(rng.uniform(300, 3000), 3)
        self.dim_from, self.dim_until, self.dim_pct_night = "00:00", "05:00", 50
        self.on, self.dim_pct = self._scheduled_state(start_ms)
        self.fault: str | None = None
        self.stuck_on = False  # a welded relay: the schedule can no longer switch it off
        self.supply_v: float | None = None  # a sagging (or surging) supply, else nominal
        self.powered = True  # False while its circuit's breaker is off: it draws nothing
        self._metered_until = start_ms
        # The photocell sits at the lamp's position; a community shares one sky (cache key).
        self._sky_at = (round(community.lat, 2), round(community.lon, 2))
        self._schedule_next_switch(start_ms)

    def _sun(self, day: date) -> tuple[int, int]:
        c = self.community
        return sun_times(c.lat, c.lon, day, c.timezone)

    def _is_dark(self, ts: int) -> bool:
        day = self.local_time(ts).date()
        rise, set_ = self._sun(day)
        return ts < rise or ts >= set_

    def _in_dim_window(self, ts: int) -> bool:
        local = self.local_time(ts).strftime("%H:%M")
        if self.dim_from <= self.dim_until:
            return self.dim_from <= local < self.dim_until
        return local >= self.dim_from or local < self.dim_until  # the window spans midnight

    def _scheduled_state(self, ts: int) -> tuple[bool, int]:
        if not self._is_dark(ts):
            return False, 0
        return True, self.dim_pct_night if self._in_dim_window(ts) else 100

    def _next_change(self, ts: int) -> int:
        """The next sunrise, sunset or dimming boundary after ``ts``."""
        day = self.local_time(ts).date()
        tz = self.community.timezone
        candidates = [t for d in (day, day + timedelta(days=1)) for t in self._sun(d)]
        candidates += [
            next_local_time(ts, self.dim_from, tz),
            next_local_time(ts, self.dim_until, tz),
        ]
        return min(t for t in candidates if t > ts)

    def _schedule_next_switch(self, after_ms: int) -> None:
        self.at(self._next_change(after_ms), self._on_schedule)

    def _on_schedule(self, ts: int) -> None:
        self._schedule_next_switch(ts)
        on, dim_pct = self._scheduled_state(ts)
        if self.stuck_on and not on:
            return  # the relay does not open: the lamp burns on at whatever it was
        self._switch(ts, on, dim_pct, by="schedule")

    def _switch(self, ts: int, on: bool, dim_pct: int, by: str) -> None:
        if (on, dim_pct) == (self.on, self.dim_pct):
            return
        self._meter(ts)
        self.on, self.dim_pct = on, dim_pct
        self.send_event(ts, "switched", on=on, dim_pct=dim_pct, by=by)

    def _power_w(self) -> float:
        if not self.powered:
            return 0.0
        if not self.on or self.fault in DARK_FAULTS:
            return STANDBY_W
        return self.rated_w * self.dim_pct / 100

    def _meter(self, ts: int) -> None:
        """Add the energy drawn since the last metering: the register only grows."""
        hours = max(0, ts - self._metered_until) / 3_600_000
        self.energy_kwh += self._power_w() * hours / 1000
        self._metered_until = ts

    def _lux(self, ts: int) -> float:
        """The sky at the lamp (clear-sky model times the day's cloud), plus its own light."""
        sky = clear_sky_lux(*self._sky_at, ts // 60_000)
        sky *= cloud_factor(self.community.id, self.local_day(ts))
        own = LAMP_SPILL_LUX * self._power_w() / self.rated_w
        return sky + own

    def _voltage(self) -> float:
        if self.supply_v is None:
            return self.rng.gauss(NOMINAL_V, VOLTAGE_SIGMA_V)
        return max(0.0, self.rng.gauss(self.supply_v, SAG_SIGMA_V))

    def telemetry(self, ts: int) -> dict[str, Any]:
        """Electrical readings with measurement noise, the energy register, the light."""
        self._meter(ts)
        voltage = self._voltage()
        power = self._power_w() * self.rng.gauss(1.0, POWER_NOISE)
        return {
            "on": self.on,
            "dim_pct": self.dim_pct,
            "voltage_v": round(voltage, 1),
            "current_a": round(max(0.0, power / voltage), 3) if voltage > 1 else 0.0,
            "power_w": round(max(0.0, power), 1),
            "energy_kwh": round(self.energy_kwh, 3),
            "lux": round(self._lux(ts) * self.rng.uniform(0.9, 1.1), 1),
            "fault": self.fault,
        }

    # --- commands ---------------------------------------------------------------------

    def cmd_set_light(self, ts: int, args: dict[str, Any]) -> str | None:
        """Switch/dim now; the next scheduled change takes over again."""
        self._switch(ts, args["on"], args["dim_pct"] if args["on"] else 0, "command")
        return None

    def cmd_set_schedule(self, ts: int, args: dict[str, Any]) -> str | None:
        """Change the after-midnight dimming window (from the next scheduled change on)."""
        self.dim_from, self.dim_until = args["dim_from"], args["dim_until"]
        self.dim_pct_night = args["dim_pct"]
        return None

    # --- faults (scripted by scenarios) -----------------------------------------------

    def fail(self, ts: int, fault: str = "lamp_failure") -> None:
        """The lamp reports a fault; a failed lamp draws only its controller's standby power."""
        if self.fault == fault:
            return
        self._meter(ts)
        if self.fault is not None:
            self.send_event(ts, "fault_cleared", fault=self.fault)
        self.fault = fault
        self.send_event(ts, "fault", fault=fault)

    def repair(self, ts: int) -> None:
        """The fault is fixed."""
        if self.fault is not None:
            self._meter(ts)
            self.send_event(ts, "fault_cleared", fault=self.fault)
            self.fault = None

    def stick_on(self, ts: int) -> None:
        """The relay welds shut: the lamp is lit and stays lit whatever the schedule says."""
        self.stuck_on = True
        if not self.on:  # no switching was asked for, so the controller sends no event
            self._meter(ts)
            self.on, self.dim_pct = True, 100

    def unstick(self, ts: int) -> None:
        """The relay is replaced: the lamp follows its schedule again."""
        self.stuck_on = False
        self._switch(ts, *self._scheduled_state(ts), by="schedule")

    def power(self, ts: int, powered: bool) -> None:
        """The circuit's breaker trips (False) or is reset (True); the register stops meanwhile."""
        self._meter(ts)
        self.powered = powered

    def set_supply(self, ts: int, volts: float | None) -> None:
        """The supply sags (or surges) to ``volts``; None restores the nominal supply."""
        self.supply_v = volts
