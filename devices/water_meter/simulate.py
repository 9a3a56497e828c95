"""A smart water meter in an elderly resident's home: water at mealtimes, little at night."""

from __future__ import annotations

import random
from typing import Any

from devices.contract import Community, DeviceRecord
from devices.simulation import DailyProfile, SimulatedDevice

# Draws of water by local hour: washing in the morning, cooking at meals, evening wash.
USE = DailyProfile(
    [0.05, 0.02, 0.02, 0.02, 0.05, 0.6, 2.2, 2.4, 1.4, 0.8, 1.0, 2.0,
     1.6, 0.6, 0.5, 0.6, 1.0, 2.0, 2.2, 1.6, 1.6, 1.0, 0.4, 0.1]
)  # fmt: skip
BATTERY_DAYS_PER_PCT = 12.0


class SimulatedWaterMeter(SimulatedDevice):
    """Reports every 15 min and whenever flow starts or stops; the register only grows."""

    telemetry_interval_ms = 15 * 60_000

    def __init__(
        self, record: DeviceRecord, community: Community, rng: random.Random, start_ms: int
    ) -> None:
        super().__init__(record, community, rng, start_ms)
        # Elderly people living alone use little water, and each household differently.
        self.litres_per_day = rng.uniform(60, 160)
        self.draws_per_day = rng.uniform(10, 22)
        self.total_l = round(rng.uniform(20_000, 300_000), 1)
        self.battery_start = rng.uniform(55, 100)
        self.start_ms = start_ms
        self.flow_lpm = 0.0
        self.valve = "open"
        self._flow_since = start_ms
        self._schedule_draw(start_ms)

    def _register(self, ts: int) -> float:
        return self.total_l + self.flow_lpm * max(0, ts - self._flow_since) / 60_000

    def _set_flow(self, ts: int, lpm: float) -> None:
        self.total_l = self._register(ts)
        self._flow_since = ts
        self.flow_lpm = lpm

    def _schedule_draw(self, after_ms: int) -> None:
        self.at(USE.next_arrival(self, after_ms, self.draws_per_day, self.rng), self._draw)

    def _draw(self, ts: int) -> None:
        self._schedule_draw(ts)
        if self.flow_lpm > 0 or self.valve == "closed":
            return
        litres = self.rng.expovariate(self.draws_per_day / self.litres_per_day)
        lpm = self.rng.uniform(3.0, 9.0)
        self._set_flow(ts, round(lpm, 2))
        self.send_telemetry(ts, **self.telemetry(ts))
        self.at(ts + max(5_000, int(litres / lpm * 60_000)), self._stop_flow)

    def _stop_flow(self, ts: int) -> None:
        if self.flow_lpm > 0:
            self._set_flow(ts, 0.0)
            self.send_telemetry(ts, **self.telemetry(ts))

    def battery_pct(self, ts: int) -> int:
        """Drains about one percent every twelve days."""
        days = (ts - self.start_ms) / 86_400_000
        return max(0, int(self.battery_start - days / BATTERY_DAYS_PER_PCT))

    def telemetry(self, ts: int) -> dict[str, Any]:
        """Register, flow now, battery and valve."""
        return {
            "total_l": round(self._register(ts), 1),
            "flow_lpm": self.flow_lpm,
            "battery_pct": self.battery_pct(ts),
            "valve": self.valve,
            "reverse_flow": False,
        }

    def cmd_read_now(self, ts: int, args: dict[str, Any]) -> str | None:
        """Report the register now."""
        self.send_telemetry(ts, **self.telemetry(ts))
        return None

    def cmd_set_valve(self, ts: int, args: dict[str, Any]) -> str | None:
        """Open or close the valve; closing stops any flow."""
        valve = args["valve"]
        if valve == self.valve:
            return None
        if valve == "closed":
            self._set_flow(ts, 0.0)
        self.valve = valve
        self.send_event(ts, "valve_changed", valve=valve)
        self.send_telemetry(ts, **self.telemetry(ts))
        return None
