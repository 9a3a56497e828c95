"""A smart street lamp: lit from sunset to sunrise, dimmed after midnight."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from astral import Observer
from astral.sun import sunrise, sunset

from devices.contract import Community, DeviceRecord
from devices.simulation import SimulatedDevice, next_local_time

STANDBY_W = 0.4
NIGHT_LUX = 2.0
NOON_LUX = 30_000.0


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
        self._metered_until = start_ms
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
        self._switch(ts, *self._scheduled_state(ts), by="schedule")

    def _switch(self, ts: int, on: bool, dim_pct: int, by: str) -> None:
        if (on, dim_pct) == (self.on, self.dim_pct):
            return
        self._meter(ts)
        self.on, self.dim_pct = on, dim_pct
        self.send_event(ts, "switched", on=on, dim_pct=dim_pct, by=by)

    def _power_w(self) -> float:
        if not self.on or self.fault == "lamp_failure":
            return STANDBY_W
        return self.rated_w * self.dim_pct / 100

    def _meter(self, ts: int) -> None:
        """Add the energy drawn since the last metering: the register only grows."""
        hours = max(0, ts - self._metered_until) / 3_600_000
        self.energy_kwh += self._power_w() * hours / 1000
        self._metered_until = ts

    def _lux(self, ts: int) -> float:
        if self._is_dark(ts):
            return NIGHT_LUX + (8.0 if self.on else 0.0)
        day = self.local_time(ts).date()
        rise, set_ = self._sun(day)
        # A half-sine from sunrise to sunset is close enough to the sky's brightness.
        return NOON_LUX * max(0.02, math.sin(math.pi * (ts - rise) / (set_ - rise)))

    def telemetry(self, ts: int) -> dict[str, Any]:
        """Electrical readings with measurement noise, and the cumulative energy register."""
        self._meter(ts)
        voltage = self.rng.gauss(221.0, 2.5)
        power = self._power_w() * self.rng.gauss(1.0, 0.015)
        return {
            "on": self.on,
            "dim_pct": self.dim_pct,
            "voltage_v": round(voltage, 1),
            "current_a": round(max(0.0, power / voltage), 3),
            "power_w": round(max(0.0, power), 1),
            "energy_kwh": round(self.energy_kwh, 3),
            "lux": round(self._lux(ts) * self.rng.uniform(0.9, 1.1), 1),
            "fault": self.fault,
        }

    def cmd_set_light(self, ts: int, args: dict[str, Any]) -> str | None:
        """Switch/dim now; the next scheduled change takes over again."""
        self._switch(ts, args["on"], args["dim_pct"] if args["on"] else 0, "command")
        return None

    def cmd_set_schedule(self, ts: int, args: dict[str, Any]) -> str | None:
        """Change the after-midnight dimming window (from the next scheduled change on)."""
        self.dim_from, self.dim_until = args["dim_from"], args["dim_until"]
        self.dim_pct_night = args["dim_pct"]
        return None
