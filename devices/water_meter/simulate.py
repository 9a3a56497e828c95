"""A smart water meter in an elderly resident's home: water at mealtimes, little at night."""

from __future__ import annotations

import random
from typing import Any

from devices.contract import Community, DeviceRecord
from devices.simulation import DailyProfile, SimulatedDevice

# Draws of water by local hour: washing in the morning, cooking at meals, evening wash,
# and the odd trip to the toilet at night.
USE = DailyProfile(
    [0.3, 0.25, 0.25, 0.2, 0.3, 0.8, 2.2, 2.4, 1.4, 0.8, 1.0, 2.0,
     1.6, 0.6, 0.5, 0.6, 1.0, 2.0, 2.2, 1.6, 1.6, 1.0, 0.5, 0.35]
)  # fmt: skip
BATTERY_DAYS_PER_PCT = 12.0
DEFAULT_NO_USE_HOURS = 12.0
# A grid worker sets a household's no-use threshold (care.no_use_hours) above its longest
# usual pause, so a simulated household never pauses longer than this share of it.
LONGEST_PAUSE_SHARE = 0.8
MIN_DRAW_MS = 5_000
LAST_DRAW_LPM, LAST_DRAW_MS = 5.0, 30_000  # the last use before a scripted silence


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
        self.shift_ms = int(rng.uniform(-60, 60) * 60_000)  # early risers and late sleepers
        care = record.attributes.get("care") or {}
        no_use_hours = float(care.get("no_use_hours") or DEFAULT_NO_USE_HOURS)
        self.longest_pause_ms = int(no_use_hours * LONGEST_PAUSE_SHARE * 3_600_000)
        self.total_l = round(rng.uniform(20_000, 300_000), 1)
        self.battery_start = rng.uniform(55, 100)
        self.start_ms = start_ms
        self.flow_lpm = 0.0
        self.valve = "open"
        self.in_use = True  # False: nobody draws water (the resident is away, ill or fallen)
        self.reverse_flow = False
        self._flow_since = start_ms
        self._tap = 0  # which draw the flow belongs to; a newer one takes over
        self._last_draw = start_ms
        self._schedule_draw(start_ms)

    def _register(self, ts: int) -> float:
        return self.total_l + self.flow_lpm * max(0, ts - self._flow_since) / 60_000

    def _set_flow(self, ts: int, lpm: float) -> None:
        self.total_l = self._register(ts)
        self._flow_since = ts
        self.flow_lpm = lpm

    def _schedule_draw(self, after_ms: int) -> None:
        when = USE.next_arrival(self, after_ms, self.draws_per_day, self.rng, self.shift_ms)
        if self.in_use and self.valve == "open":
            # Never a pause longer than the household's usual longest (a trip to the toilet).
            pause = int(self.longest_pause_ms * self.rng.uniform(0.75, 1.0))
            when = min(when, max(self._last_draw + pause, after_ms + MIN_DRAW_MS))
        self.at(when, self._draw)

    def _draw(self, ts: int) -> None:
        if self.flow_lpm > 0:
            self._last_draw = ts  # water is running anyway
        elif self.valve == "open" and self.in_use:
            self._last_draw = ts
            litres = self.rng.expovariate(self.draws_per_day / self.litres_per_day)
            lpm = round(self.rng.uniform(3.0, 9.0), 2)
            self._start_flow(ts, lpm, max(MIN_DRAW_MS, int(litres / lpm * 60_000)))
        self._schedule_draw(ts)

    def _start_flow(self, ts: int, lpm: float, duration_ms: int | None) -> None:
        self._tap += 1
        tap = self._tap
        self._set_flow(ts, lpm)
        self.send_telemetry(ts, **self.telemetry(ts))
        if duration_ms is not None:
            self.at(ts + duration_ms, lambda t: self._stop_flow(t, tap))

    def _stop_flow(self, ts: int, tap: int) -> None:
        if self.flow_lpm > 0 and tap == self._tap:
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
            "reverse_flow": self.reverse_flow,
        }

    # --- commands ---------------------------------------------------------------------

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

    # --- faults (scripted by scenarios) -----------------------------------------------

    def stop_use(self, ts: int) -> None:
        """A last short draw now, then nobody draws water any more (what welfare checks are for)."""
        if self.flow_lpm == 0 and self.valve == "open":
            self._last_draw = ts
            self._start_flow(ts, LAST_DRAW_LPM, LAST_DRAW_MS)
        self.in_use = False

    def resume_use(self, ts: int) -> None:
        """The household uses water again."""
        self.in_use = True
        self._last_draw = ts

    def run_tap(self, ts: int, lpm: float) -> None:
        """A tap is left running (or a pipe leaks) at ``lpm`` until ``close_tap``."""
        if self.valve == "open":
            self._start_flow(ts, lpm, None)

    def close_tap(self, ts: int) -> None:
        """Someone turns the running tap off."""
        self._stop_flow(ts, self._tap)

    def tamper(self, ts: int) -> None:
        """The meter's seal or magnet sensor reports tampering."""
        self.send_event(ts, "tamper")

    def set_reverse_flow(self, ts: int, reverse: bool) -> None:
        """Water runs backwards through the meter (refitted the wrong way, or tampered with)."""
        self.reverse_flow = reverse
        self.send_telemetry(ts, **self.telemetry(ts))
