"""A smart unit door: residents come and go with the rhythm of the day."""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

from devices.contract import Community, DeviceRecord
from devices.simulation import DailyProfile, SimulatedDevice, weighted_choice

# Passages through a unit door by local hour: morning and evening peaks, quiet nights.
TRAFFIC = DailyProfile(
    [0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 1.0, 2.2, 2.0, 1.2, 1.0, 1.3,
     1.2, 0.9, 0.8, 0.9, 1.2, 2.2, 2.4, 1.8, 1.2, 0.8, 0.4, 0.2]
)  # fmt: skip
PASSAGES_PER_HOUSEHOLD_PER_DAY = 5.0
# People leave by the inside button; they come in mostly by face.
ENTRY_METHODS = (("face", 0.76), ("card", 0.12), ("app", 0.08), ("pin", 0.04))
EXIT_SHARE = 0.45
FACE_MISMATCH_RATE = 0.03


class SimulatedDoor(SimulatedDevice):
    """Unlocks, opens and closes for its unit's households; heartbeats every 60 s."""

    telemetry_interval_ms = 60_000

    def __init__(
        self, record: DeviceRecord, community: Community, rng: random.Random, start_ms: int
    ) -> None:
        super().__init__(record, community, rng, start_ms)
        self.households = int(record.attributes.get("unit_households", 10))
        self.residents = [_resident_id(record.device_id, i) for i in range(self.households * 2)]
        self.locked = True
        self.open = False
        self.rssi_dbm = rng.randint(-85, -55)
        self._schedule_visit(start_ms)

    def telemetry(self, ts: int) -> dict[str, Any]:
        """Lock and leaf state, signal, enclosure temperature following the day."""
        hour = self.local_time(ts).hour
        temp = 12 + 6 * math.sin((hour - 9) / 24 * 2 * math.pi) + self.rng.gauss(0, 0.3)
        rssi = max(-120, min(-30, self.rssi_dbm + self.rng.randint(-3, 3)))
        return {
            "locked": self.locked,
            "open": self.open,
            "rssi_dbm": rssi,
            "temp_c": round(temp, 1),
        }

    def _schedule_visit(self, after_ms: int) -> None:
        per_day = self.households * PASSAGES_PER_HOUSEHOLD_PER_DAY
        self.at(TRAFFIC.next_arrival(self, after_ms, per_day, self.rng), self._visit)

    def _visit(self, ts: int) -> None:
        self._schedule_visit(ts)
        if not self.locked:  # someone is already passing; they walk through together
            return
        if self.rng.random() < EXIT_SHARE:
            self._unlock(ts, "button", None)
            return
        method = weighted_choice(self.rng, ENTRY_METHODS)
        resident = self.rng.choice(self.residents)
        if method == "face" and self.rng.random() < FACE_MISMATCH_RATE:
            self.send_event(ts, "unlock_failed", method="face", reason="unknown_face")
            retry = ts + self.rng.randint(3_000, 8_000)
            self.at(retry, lambda t: self._unlock(t, method, resident))
            return
        self._unlock(ts, method, resident)

    def _unlock(
        self, ts: int, method: str, resident: str | None, hold_s: float | None = None
    ) -> None:
        fields: dict[str, Any] = {"method": method}
        if resident is not None:
            fields["resident"] = resident
        self.send_event(ts, "unlock", **fields)
        self.locked = False
        opened = ts + self.rng.randint(800, 2_500)
        self.at(opened, self._open)
        hold = hold_s if hold_s is not None else self.rng.lognormvariate(math.log(7), 0.4)
        self.at(opened + int(hold * 1000), self._close)

    def _open(self, ts: int) -> None:
        if not self.open:
            self.open = True
            self.send_event(ts, "open")

    def _close(self, ts: int) -> None:
        if self.open:
            self.open = False
            self.send_event(ts, "close")
        self.locked = True

    def cmd_unlock(self, ts: int, args: dict[str, Any]) -> str | None:
        """Unlock remotely for ``duration_s``; someone walks through."""
        if not self.locked:
            return None
        self._unlock(ts, "remote", None, hold_s=float(args["duration_s"]))
        return None

    def cmd_lock(self, ts: int, args: dict[str, Any]) -> str | None:
        """Lock now (a door held open cannot lock)."""
        if self.open:
            return "door is open"
        self.locked = True
        return None


def _resident_id(device_id: str, index: int) -> str:
    return "r" + hashlib.sha256(f"{device_id}:{index}".encode()).hexdigest()[:16]
